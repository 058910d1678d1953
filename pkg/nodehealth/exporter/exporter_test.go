package exporter

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// patchCounter counts nodes/status patches on a fake clientset.
type patchCounter struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (p *patchCounter) n() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.bodies)
}

func fakeWithNode(t *testing.T, node string) (*fake.Clientset, *patchCounter) {
	t.Helper()
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: "ReadonlyFilesystem", Status: corev1.ConditionTrue, Reason: "FilesystemIsReadOnly", Message: "ro",
				LastTransitionTime: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
		}}})
	pc := &patchCounter{}
	cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if pa, ok := a.(k8stesting.PatchAction); ok && pa.GetSubresource() == "status" {
			pc.mu.Lock()
			pc.bodies = append(pc.bodies, pa.GetPatch())
			pc.mu.Unlock()
		}
		return false, nil, nil
	})
	return cs, pc
}

func TestResumeReadsNodeConditions(t *testing.T) {
	cs, _ := fakeWithNode(t, "n1")
	e := New(cs, "n1", Options{})
	got, err := e.Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := got["ReadonlyFilesystem"]; !c.Status || c.Reason != "FilesystemIsReadOnly" || c.Transition.Year() != 2026 {
		t.Errorf("resumed ReadonlyFilesystem = %+v", c)
	}
	if _, err := New(cs, "missing", Options{}).Resume(context.Background()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Resume of a missing node: %v, want an error naming it", err)
	}
}

func TestChangesCoalesceIntoOnePatch(t *testing.T) {
	cs, pc := fakeWithNode(t, "n1")
	e := New(cs, "n1", Options{Heartbeat: time.Hour, Coalesce: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i, typ := range []string{"A", "B", "C", "A"} {
		e.SetCondition("s", nodehealth.Condition{Type: typ, Status: i%2 == 0, Reason: "R" + typ})
	}
	waitFor(t, func() bool { return pc.n() >= 1 }, "first patch")
	time.Sleep(200 * time.Millisecond)
	if n := pc.n(); n != 1 {
		t.Fatalf("%d patches for one burst of changes, want 1", n)
	}
	var p struct {
		Status struct{ Conditions []corev1.NodeCondition } `json:"status"`
	}
	if err := json.Unmarshal(pc.bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Conditions) != 3 {
		t.Errorf("patch has %d conditions, want 3: %s", len(p.Status.Conditions), pc.bodies[0])
	}
	// Setting the same state again writes nothing.
	e.SetCondition("s", nodehealth.Condition{Type: "B", Status: false, Reason: "RB"})
	time.Sleep(200 * time.Millisecond)
	if n := pc.n(); n != 1 {
		t.Errorf("an unchanged condition caused a patch (%d patches)", n)
	}
	n, err := cs.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, c := range n.Status.Conditions {
		types[string(c.Type)] = true
	}
	if !types["Ready"] || !types["A"] || !types["ReadonlyFilesystem"] {
		t.Errorf("after the merge patch, node conditions %v lack others' conditions or ours", types)
	}
}

func TestHeartbeatRepatches(t *testing.T) {
	cs, pc := fakeWithNode(t, "n1")
	e := New(cs, "n1", Options{Heartbeat: 100 * time.Millisecond, Coalesce: time.Millisecond})
	e.SetCondition("s", nodehealth.Condition{Type: "A", Reason: "RA"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { return pc.n() >= 3 }, "two heartbeats after the first patch")
}

func TestPatchErrorIsRetried(t *testing.T) {
	cs := fake.NewClientset() // no node: every patch fails
	e := New(cs, "gone", Options{Heartbeat: time.Hour, Coalesce: time.Millisecond})
	e.SetCondition("s", nodehealth.Condition{Type: "A", Reason: "RA"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	if e.Patches() != 0 {
		t.Errorf("patch of a missing node reported success")
	}
	if since, err := e.Failing(); err == nil || !strings.Contains(err.Error(), "patch nodes/gone/status") || since.IsZero() {
		t.Errorf("Failing() = %v, %v; want the patch error and its start", err, since)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.Patches() == 1 }, "the retried patch")
	if _, err := e.Failing(); err != nil {
		t.Errorf("Failing() after a successful patch = %v", err)
	}
	cancel()
	<-done
}

func TestOOMMessage(t *testing.T) {
	cid := strings.Repeat("cd", 32)
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}},
			{Name: "sidecar"},
		}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", ContainerID: "containerd://" + cid},
			{Name: "sidecar", ContainerID: "containerd://" + strings.Repeat("ef", 32)},
		}},
	}
	single := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "only"}}}}
	kill := func(id string) *nodehealth.OOMKill {
		return &nodehealth.OOMKill{PID: 7, Task: "stress", ContainerID: id, Constraint: "CONSTRAINT_MEMCG", AnonRSSKB: 262144}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		kill *nodehealth.OOMKill
		want string
	}{
		{"container by ID with limit", pod, kill(cid), "Container app was OOM-killed: process stress (pid 7) used 256Mi of its memory limit 256Mi (constraint CONSTRAINT_MEMCG)"},
		{"no limit", pod, kill(strings.Repeat("ef", 32)), "Container sidecar was OOM-killed: process stress (pid 7) used 256Mi of its no memory limit"},
		{"unknown ID, two containers", pod, kill(""), "Container unknown was OOM-killed"},
		{"unknown ID, one container", single, kill(""), "Container only was OOM-killed"},
	}
	for _, tt := range tests {
		if got := OOMMessage(tt.pod, tt.kill); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: OOMMessage = %q, want prefix %q", tt.name, got, tt.want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventTypes(t *testing.T) {
	cs, _ := fakeWithNode(t, "n1")
	e := New(cs, "n1", Options{Heartbeat: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e.Emit(nodehealth.Event{Reason: "FilesystemIsReadOnly", Message: "ro"})
	e.Emit(nodehealth.Event{Reason: "FilesystemRemountedReadWrite", Message: "rw", Normal: true})
	want := map[string]string{"FilesystemIsReadOnly": corev1.EventTypeWarning, "FilesystemRemountedReadWrite": corev1.EventTypeNormal}
	waitFor(t, func() bool {
		evs, err := cs.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil || len(evs.Items) < 2 {
			return false
		}
		for _, ev := range evs.Items {
			if want[ev.Reason] != ev.Type || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "n1" {
				t.Errorf("event %s: type %s on %s/%s, want %s on Node/n1", ev.Reason, ev.Type, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, want[ev.Reason])
			}
		}
		return true
	}, "two events on the node")
}
