package kubelet

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

func TestPodPrefix(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.240.3.0/24"}}}
	addr, gw, err := podPrefix(node, "10.240.3.7")
	if err != nil || addr.String() != "10.240.3.7/24" || gw.String() != "10.240.3.1/24" {
		t.Errorf("podPrefix = %s, %s, %v; want 10.240.3.7/24, 10.240.3.1/24", addr, gw, err)
	}
	for _, ip := range []string{"10.240.4.7", "not-an-ip"} {
		if _, _, err := podPrefix(node, ip); err == nil {
			t.Errorf("podPrefix(%q): no error", ip)
		}
	}
}

func TestRealPodStatus(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "kdiag.io/lab/http-server"}, {Name: "b", Image: "kdiag.io/lab/http-client"}}},
	}
	now := metav1.NewTime(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	net := podNet{hostIPs: []string{"127.0.1.1"}, podIPs: []string{"10.240.1.2"}}
	st := realPodStatus(pod, net, now, runtime.PodState{
		Phase: corev1.PodRunning,
		Containers: []corev1.ContainerStatus{
			{Name: "a", Ready: true, ContainerID: "containerd://1"},
			{Name: "b", Ready: false, ContainerID: "containerd://2", RestartCount: 2},
		},
	})
	if st.Phase != corev1.PodRunning || st.PodIP != "10.240.1.2" {
		t.Errorf("phase %s IP %s", st.Phase, st.PodIP)
	}
	if st.ContainerStatuses[1].Image != "kdiag.io/lab/http-client:latest" || st.ContainerStatuses[1].RestartCount != 2 {
		t.Errorf("container status b = %+v", st.ContainerStatuses[1])
	}
	ready := findCondition(st.Conditions, corev1.PodReady)
	if ready == nil || ready.Status != corev1.ConditionFalse || ready.Reason != "ContainersNotReady" || !strings.Contains(ready.Message, "[b]") {
		t.Errorf("Ready condition = %+v, want False ContainersNotReady naming b", ready)
	}
	if st.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("QoS %s, want BestEffort", st.QOSClass)
	}
}

func TestCopyLog(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	log := ""
	for i, l := range []string{"stdout F one", "stderr F two", "stdout P thr", "stdout F ee", "stdout F four"} {
		log += t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano) + " " + l + "\n"
	}
	log += "garbage line\n" + t0.Add(9*time.Second).Format(time.RFC3339Nano) + " stdout F half-writ" // no newline yet
	for _, tc := range []struct {
		name string
		opts logOptions
		want string
	}{
		{"all", logOptions{tail: -1}, "one\ntwo\nthree\nfour\n"},
		{"tail 2", logOptions{tail: 2}, "ee\nfour\n"},
		{"tail 0", logOptions{tail: 0}, ""},
		{"since", logOptions{tail: -1, since: t0.Add(3 * time.Second)}, "ee\nfour\n"},
		{"timestamps", logOptions{tail: 1, timestamps: true}, t0.Add(4*time.Second).Format(time.RFC3339Nano) + " four\n"},
	} {
		var out strings.Builder
		if err := copyLog(&out, bufio.NewReader(strings.NewReader(log)), tc.opts, func() bool { return false }); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if out.String() != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, out.String(), tc.want)
		}
	}
}

// TestContainerLogsBadRequests checks the logs endpoint's answers to what
// it cannot serve: a bad tailLines, an unknown pod, a simulated pod.
func TestContainerLogsBadRequests(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sim", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "lab-node-1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}
	s := newSimulator(fake.NewClientset(pod), Options{Nodes: 1})
	s.podLister = newPodIndexer(t, pod)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.serveContainerLogs)
	for _, tc := range []struct {
		url, want string
		code      int
	}{
		{"/containerLogs/ns/sim/c?tailLines=x", "tailLines must be", http.StatusBadRequest},
		{"/containerLogs/ns/gone/c", "not found", http.StatusNotFound},
		{"/containerLogs/ns/sim/other", "not valid", http.StatusNotFound},
		{"/containerLogs/ns/sim/c", "simulated", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.url, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.url, rec.Code, rec.Body.String(), tc.code, tc.want)
		}
	}
}

// TestRealPodsOnSimulatedLab: asking for real pods on a lab without data
// plane fails with one line instead of simulating silently.
func TestRealPodsOnSimulatedLab(t *testing.T) {
	dir := t.TempDir()
	state := `{"version":1,"dir":"` + dir + `","ports":{},"processes":[]}`
	if err := os.WriteFile(lab.Layout{Dir: dir}.State(), []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSimulator(fake.NewClientset(), Options{Nodes: 1, Real: &RealPods{Dir: dir, Resolver: runtime.Chain()}})
	err := s.setupReal(context.Background())
	if err == nil || !strings.Contains(err.Error(), "simulated mode") {
		t.Errorf("setupReal on a simulated lab = %v, want an error saying so", err)
	}
	s = newSimulator(fake.NewClientset(), Options{Nodes: 1, Real: &RealPods{Dir: t.TempDir(), Resolver: runtime.Chain()}})
	if err := s.setupReal(context.Background()); err == nil {
		t.Error("setupReal without a lab: no error")
	}
}

// newPodIndexer is a pod lister over the given pods.
func newPodIndexer(t *testing.T, pods ...*corev1.Pod) corelisters.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewPodLister(idx)
}

func TestConfigErrorStatus(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "kdiag.io/lab/nope"}}}}
	st := configErrorStatus(pod, podNet{hostIPs: []string{"127.0.1.1"}, podIPs: []string{"10.240.1.2"}}, metav1.Now(), errors.New("image kdiag.io/lab/nope: no such lab program"))
	w := st.ContainerStatuses[0].State.Waiting
	if st.Phase != corev1.PodPending || w == nil || w.Reason != "CreateContainerConfigError" || !strings.Contains(w.Message, "no such lab program") {
		t.Errorf("status %s %+v, want Pending with CreateContainerConfigError and the cause", st.Phase, st.ContainerStatuses[0].State)
	}
	if st.PodIP != "" {
		t.Errorf("podIP %q for a pod that never started", st.PodIP)
	}
	if r := findCondition(st.Conditions, corev1.PodReady); r == nil || r.Status != corev1.ConditionFalse {
		t.Errorf("Ready = %+v, want False", r)
	}
}
