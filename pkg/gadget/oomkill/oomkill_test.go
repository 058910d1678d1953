package oomkill_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
)

func TestMain(m *testing.M) {
	testbed.RunHelperIfRequested()
	os.Exit(m.Run())
}

const node = "node-1"

func TestMemoryHogIsReportedWithItsPod(t *testing.T) {
	for _, classic := range []bool{false, true} {
		name := "tp_btf"
		if classic {
			name = "tracepoint"
		}
		t.Run(name, func(t *testing.T) { testMemoryHog(t, classic) })
	}
}

func testMemoryHog(t *testing.T, classic bool) {
	bed := testbed.New(t)
	const limit = 48 << 20
	hogPod := bed.AddPod("batch", "report-builder-x1", testbed.PodOptions{MemoryLimit: limit})
	other := bed.AddPod("other", "cache-1", testbed.PodOptions{MemoryLimit: limit})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	tr, err := oomkill.New(oomkill.Options{ForceTracepoint: classic, Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "batch"}}})
	if err != nil {
		t.Fatalf("oomkill.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var events []oomkill.Event
	done := make(chan gadget.Stats)
	go func() {
		st, err := tr.Run(ctx, func(ev oomkill.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		})
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- st
	}()

	// The other pod's hog dies first and must be filtered out.
	otherHog := bed.StartReady(other, "memhog")
	if err := otherHog.Wait(30 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("hog in %s: exit %v, want killed by the OOM killer", other.Name, err)
	}
	hog := bed.StartReady(hogPod, "memhog")
	hogPID := uint32(hog.PID())
	if err := hog.Wait(30 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("hog in %s: exit %v, want killed by the OOM killer", hogPod.Name, err)
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	st := <-done

	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 {
		t.Fatalf("got %d events, want 1 (the other pod is filtered out): %+v", len(events), events)
	}
	ev := events[0]
	want := enrich.K8s{Node: node, Namespace: "batch", Pod: "report-builder-x1", Container: "main", PodUID: hogPod.UID}
	if ev.K8s != want {
		t.Errorf("oom kill labelled %+v, want %+v", ev.K8s, want)
	}
	if ev.PID != hogPID {
		t.Errorf("victim pid %d, want the hog's %d", ev.PID, hogPID)
	}
	if ev.Comm == "" || ev.Trigger.PID == 0 || ev.Trigger.Comm == "" {
		t.Errorf("victim comm %q, trigger %+v: want both named", ev.Comm, ev.Trigger)
	}
	if ev.Pages != limit/uint64(os.Getpagesize()) {
		t.Errorf("pages = %d, want the cgroup limit %d", ev.Pages, limit/os.Getpagesize())
	}
	if ev.AnonRSSPages == 0 {
		t.Errorf("victim anon RSS is 0 pages")
	}
	if !strings.Contains(ev.MemoryCgroup, "pod"+hogPod.UID) {
		t.Errorf("memory cgroup %q does not name the pod", ev.MemoryCgroup)
	}
	wantOf := "victim"
	if classic {
		wantOf = "trigger"
	}
	if ev.MemoryCgroupOf != wantOf {
		t.Errorf("memory cgroup of %q, want %q", ev.MemoryCgroupOf, wantOf)
	}
	// At least the other pod's kill is filtered; OOM kills of other tests
	// running on this machine at the same time (the lab's real pods) are
	// filtered too.
	if st.Filtered < 1 || st.Events != 1 || st.Lost != 0 {
		t.Errorf("stats %+v, want 1 event, at least 1 filtered, 0 lost", st)
	}
}
