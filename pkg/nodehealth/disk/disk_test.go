package disk

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs this test as root)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",nr_inodes=4096"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func fill(t *testing.T, path string, bytes int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, bytes), 0o644); err != nil {
		t.Fatalf("fill %s: %v", path, err)
	}
}

type recorder struct {
	mu     sync.Mutex
	conds  []nodehealth.Condition
	events []nodehealth.Event
}

func (r *recorder) SetCondition(_ string, c nodehealth.Condition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conds = append(r.conds, c)
}

func (r *recorder) Emit(e nodehealth.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) last() nodehealth.Condition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conds[len(r.conds)-1]
}

func TestUsageDedupesByFilesystem(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	a, b := filepath.Join(mnt, "kubelet"), filepath.Join(mnt, "log")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	other := t.TempDir()
	fill(t, filepath.Join(a, "f"), 1<<20)
	fss, errs := Usage([]string{a, other, b, filepath.Join(mnt, "missing")})
	if len(fss) != 2 {
		t.Fatalf("Usage: %d filesystems %+v, want 2 (the tmpfs once, and the temp dir's)", len(fss), fss)
	}
	if got := strings.Join(fss[0].Paths, ","); got != a+","+b {
		t.Errorf("tmpfs paths = %s, want %s,%s", got, a, b)
	}
	if fss[0].TotalBytes != 4<<20 || fss[0].UsedBytes < 1<<20 || fss[0].UsedPercent < 24 || fss[0].UsedPercent > 30 {
		t.Errorf("tmpfs usage %+v: want 4MiB total, ~1MiB (25%%) used", fss[0])
	}
	if fss[0].InodesTotal != 4096 || fss[0].InodesUsed < 3 {
		t.Errorf("tmpfs inodes %d/%d: want 4096 total, >=3 used", fss[0].InodesUsed, fss[0].InodesTotal)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "missing") || !strings.Contains(errs[0].Error(), "no such file") {
		t.Errorf("errors = %v, want one naming the missing path", errs)
	}
}

func TestMonitorSetsWalksAndClears(t *testing.T) {
	mnt := mountTmpfs(t, "8m")
	kubelet, logs := filepath.Join(mnt, "kubelet"), filepath.Join(mnt, "log")
	fill(t, filepath.Join(logs, "small.log"), 64<<10)
	if err := os.MkdirAll(kubelet, 0o755); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec := &recorder{}
	m, err := NewMonitor(Options{Paths: []string{kubelet, logs}, SetPercent: 85, ClearPercent: 70, Registerer: reg}, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m.Poll(ctx)
	if c := rec.last(); c.Status || c.Reason != ReasonNormal {
		t.Fatalf("condition at ~1%% = %+v, want False/%s", c, ReasonNormal)
	}

	big := filepath.Join(kubelet, "pods", "uid-1", "volumes", "big.img")
	fill(t, big, 7<<20)
	m.Poll(ctx)
	c := rec.last()
	if !c.Status || c.Reason != ReasonHigh || c.Type != ConditionType {
		t.Fatalf("condition at ~88%% = %+v, want %s True/%s", c, ConditionType, ReasonHigh)
	}
	scans := m.Scans()
	if len(scans) != 1 || len(scans[0].Top) == 0 {
		t.Fatalf("scans = %+v, want one walk with top consumers", scans)
	}
	wantTop := []string{kubelet, filepath.Join(kubelet, "pods"), filepath.Join(kubelet, "pods", "uid-1")}
	for i, w := range wantTop {
		if scans[0].Top[i].Path != w || scans[0].Top[i].Bytes < 7<<20 {
			t.Errorf("top[%d] = %+v, want %s with >= 7MiB", i, scans[0].Top[i], w)
		}
	}
	if scans[0].Truncated != "" {
		t.Errorf("walk truncated (%s), want complete", scans[0].Truncated)
	}
	if len(rec.events) != 1 || rec.events[0].Reason != ReasonHigh || !strings.Contains(rec.events[0].Message, filepath.Join(kubelet, "pods")) {
		t.Errorf("events = %+v, want one %s naming %s/pods", rec.events, ReasonHigh, kubelet)
	}
	if v := testutil.ToFloat64(m.m.high.WithLabelValues(kubelet, labels(m.fs[0])[1])); v != 1 {
		t.Errorf("kdiag_disk_above_threshold = %v, want 1", v)
	}
	if n, err := testutil.GatherAndCount(reg, "kdiag_disk_bytes", "kdiag_disk_top_consumer_bytes", "kdiag_disk_scans_total"); err != nil || n < 5 {
		t.Errorf("disk metrics: %d series (%v), want bytes x3, top consumers and the scan counter", n, err)
	}

	// Between the clear and set bounds the condition holds (hysteresis).
	if err := os.Truncate(big, 6<<20); err != nil {
		t.Fatal(err)
	}
	m.Poll(ctx)
	if c := rec.last(); !c.Status {
		t.Fatalf("condition at ~76%% (between clear 70 and set 85) = %+v, want still True", c)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	m.Poll(ctx)
	if c := rec.last(); c.Status || c.Reason != ReasonNormal {
		t.Fatalf("condition after removing the file = %+v, want False/%s", c, ReasonNormal)
	}
	if n := len(rec.events); n != 2 || !rec.events[1].Normal || rec.events[1].Reason != ReasonNormal {
		t.Errorf("events = %+v, want a second, Normal %s event", rec.events, ReasonNormal)
	}
}

func TestMonitorResumesWithoutFlip(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	fill(t, filepath.Join(mnt, "f"), 3<<20+512<<10)
	rec := &recorder{}
	resume := map[string]nodehealth.Condition{ConditionType: {Type: ConditionType, Status: true, Reason: ReasonHigh, Transition: time.Now().Add(-time.Hour)}}
	m, err := NewMonitor(Options{Paths: []string{mnt}}, rec, resume)
	if err != nil {
		t.Fatal(err)
	}
	m.Poll(context.Background())
	for _, c := range rec.conds {
		if !c.Status {
			t.Errorf("condition flipped to False after a restart: %+v", c)
		}
	}
	if len(rec.events) != 0 {
		t.Errorf("events after a restart with the condition already True: %+v, want none (no second walk)", rec.events)
	}
}

func TestWalkBounds(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"a/1", "a/2", "b/c/d/e/deep", "f"} {
		fill(t, filepath.Join(root, p), 4096)
	}
	fss, errs := Usage([]string{root})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		lim       Limits
		truncated string
	}{
		{"complete", context.Background(), Limits{}, ""},
		{"entries", context.Background(), Limits{MaxEntries: 3}, "entries: stopped after 3"},
		{"depth", context.Background(), Limits{MaxDepth: 2}, "depth: directories more than 2 levels"},
		{"cancelled", cancelled, Limits{}, "cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Walk(tc.ctx, fss[0], tc.lim)
			if tc.truncated == "" && s.Truncated != "" || !strings.HasPrefix(s.Truncated, tc.truncated) {
				t.Errorf("Truncated = %q, want prefix %q", s.Truncated, tc.truncated)
			}
			if tc.truncated == "" && (s.Top[0].Path != root || s.Top[0].Bytes < 4*4096) {
				t.Errorf("top = %+v, want %s first with >= 16KiB", s.Top, root)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{SetPercent: 80, ClearPercent: 90}, {SetPercent: 120, ClearPercent: 90}, {SetPercent: 80, ClearPercent: -1}} {
		if _, err := NewMonitor(o, &recorder{}, nil); err == nil || !strings.Contains(err.Error(), "want 0 < clear <= set <= 100") {
			t.Errorf("NewMonitor(%+v): error %v, want a threshold error", o, err)
		}
	}
}

func TestUnreadableRootIsRecorded(t *testing.T) {
	root := t.TempDir()
	fss, _ := Usage([]string{root})
	fss[0].Paths = []string{filepath.Join(filepath.Dir(root), "gone"), root}
	fill(t, filepath.Join(root, "x"), 4096)
	s := Walk(context.Background(), fss[0], Limits{})
	if len(s.Errors) != 1 || !strings.Contains(s.Errors[0], "gone") || !strings.Contains(s.Errors[0], "no such file") {
		t.Errorf("errors = %v, want the missing root named", s.Errors)
	}
	if len(s.Top) == 0 || s.Top[0].Path != root {
		t.Errorf("top = %+v, want the readable root walked anyway", s.Top)
	}
}
