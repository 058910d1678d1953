package podready

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func TestExplain(t *testing.T) {
	cases := []struct {
		name   string
		modify func(s *cluster.Snapshot, p *corev1.Pod)
		want   []string // substrings, each in some line
		none   bool     // the pod is ready: no line at all
	}{
		{name: "ready pod", none: true, modify: func(*cluster.Snapshot, *corev1.Pod) {}},
		{
			name: "readiness probe failing, with the kubelet's event",
			modify: func(s *cluster.Snapshot, p *corev1.Pod) {
				setReady(p, corev1.ConditionFalse, "ContainersNotReady")
				p.Status.ContainerStatuses[0].Ready = false
				p.Status.ContainerStatuses[0].State.Running.StartedAt = metav1.NewTime(ct.Now().Add(-20 * time.Minute))
				s.Events = append(s.Events,
					ct.Event("Pod", "shop", "web-1", "Normal", "Pulled", "image pulled", 30*time.Minute, 1),
					ct.Event("Pod", "shop", "web-1", "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", time.Minute, 40))
			},
			want: []string{"Ready=False (ContainersNotReady) for 5m", "container app running for 20m but not ready (readiness probe failing)",
				"event Warning Unhealthy x40, last 60s ago: Readiness probe failed: HTTP probe failed with statuscode: 503"},
		},
		{
			name: "OOM-killed container restarting, on a NotReady node",
			modify: func(s *cluster.Snapshot, p *corev1.Pod) {
				setReady(p, corev1.ConditionFalse, "ContainersNotReady")
				cs := &p.Status.ContainerStatuses[0]
				cs.Ready, cs.RestartCount = false, 4
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
				cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137,
					FinishedAt: metav1.NewTime(ct.Now().Add(-2 * time.Minute))}}
				s.Nodes = []corev1.Node{ct.NotReadyNode("node-1", corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", 12*time.Minute)}
			},
			want: []string{"container app waiting: CrashLoopBackOff, 4 restarts, last exit OOMKilled (code 137) 2m ago",
				"node node-1 is Ready=Unknown (NodeStatusUnknown) for 12m"},
		},
		{
			name: "readiness gate never set and pod terminating",
			modify: func(s *cluster.Snapshot, p *corev1.Pod) {
				p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "target-health.elbv2.k8s.aws/web"}}
				setReady(p, corev1.ConditionFalse, "ReadinessGatesNotReady")
				del := metav1.NewTime(ct.Now().Add(-3 * time.Minute))
				p.DeletionTimestamp = &del
			},
			want: []string{"pod is terminating (deletionTimestamp set 3m ago)", "readiness gate target-health.elbv2.k8s.aws/web has no condition yet"},
		},
		{
			name: "pending and unschedulable",
			modify: func(s *cluster.Snapshot, p *corev1.Pod) {
				p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
					Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available:\n 3 Insufficient cpu."}}}
			},
			want: []string{"phase=Pending", "PodScheduled=False (Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			s.Nodes = []corev1.Node{ct.ReadyNode("node-1")}
			p := ct.RunningPod("shop", "web-1", "node-1", nil)
			tc.modify(s, &p)
			s.Pods = []corev1.Pod{p}
			got := Explain(s, &s.Pods[0])
			if tc.none {
				if len(got) != 0 {
					t.Fatalf("ready pod explained as %q", got)
				}
				return
			}
			all := strings.Join(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("explanation lacks %q; got:\n%s", w, all)
				}
			}
		})
	}
}

func setReady(p *corev1.Pod, st corev1.ConditionStatus, reason string) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			p.Status.Conditions[i].Status = st
			p.Status.Conditions[i].Reason = reason
			p.Status.Conditions[i].LastTransitionTime = metav1.NewTime(ct.Now().Add(-5 * time.Minute))
		}
	}
}

func TestPredicates(t *testing.T) {
	running := ct.RunningPod("shop", "web-1", "node-1", nil)
	unready := ct.RunningPod("shop", "web-2", "node-1", nil)
	setReady(&unready, corev1.ConditionFalse, "ContainersNotReady")
	done := ct.RunningPod("shop", "job-1", "node-1", nil)
	done.Status.Phase = corev1.PodSucceeded
	failed := ct.RunningPod("shop", "job-2", "node-1", nil)
	failed.Status.Phase = corev1.PodFailed
	noConds := ct.RunningPod("shop", "web-3", "node-1", nil)
	noConds.Status.Conditions = nil
	cases := []struct {
		name                      string
		p                         *corev1.Pod
		ready, terminal, hasReady bool
	}{
		{"running and ready", &running, true, false, true},
		{"running, not ready", &unready, false, false, true},
		{"succeeded", &done, true, true, true},
		{"failed", &failed, true, true, true},
		{"no conditions", &noConds, false, false, false},
	}
	for _, tc := range cases {
		if got := Ready(tc.p); got != tc.ready {
			t.Errorf("%s: Ready = %t, want %t", tc.name, got, tc.ready)
		}
		if got := Terminal(tc.p); got != tc.terminal {
			t.Errorf("%s: Terminal = %t, want %t", tc.name, got, tc.terminal)
		}
		if got := Condition(tc.p, corev1.PodReady) != nil; got != tc.hasReady {
			t.Errorf("%s: has a Ready condition = %t, want %t", tc.name, got, tc.hasReady)
		}
	}
}

func TestContainer(t *testing.T) {
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "migrate"}},
		Containers:     []corev1.Container{{Name: "app"}, {Name: "sidecar"}},
	}
	cases := []struct {
		name string
		init bool
		want bool
	}{
		{"app", false, true},
		{"sidecar", false, true},
		{"migrate", true, true},
		{"migrate", false, false}, // an init container is not an app container
		{"app", true, false},
		{"absent", false, false},
	}
	for _, tc := range cases {
		c := Container(spec, tc.name, tc.init)
		if (c != nil) != tc.want || (c != nil && c.Name != tc.name) {
			t.Errorf("Container(%q, init=%t) = %+v, want found=%t", tc.name, tc.init, c, tc.want)
		}
	}
}

func TestExplainPods(t *testing.T) {
	s := ct.Snapshot()
	s.Nodes = []corev1.Node{ct.ReadyNode("node-1")}
	for _, name := range []string{"web-1", "web-2", "web-3", "web-4"} {
		p := ct.RunningPod("shop", name, "node-1", nil)
		if name != "web-2" { // web-2 is ready: nothing to say about it
			setReady(&p, corev1.ConditionFalse, "ContainersNotReady")
		}
		s.Pods = append(s.Pods, p)
	}
	pods := []*corev1.Pod{&s.Pods[0], &s.Pods[1], &s.Pods[2], &s.Pods[3]}
	got := ExplainPods(s, pods, 3)
	want := []string{"pod web-1: Ready=False (ContainersNotReady) for 5m", "pod web-3: Ready=False (ContainersNotReady) for 5m", "... and 1 more pods not shown"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ExplainPods = %q, want %q", got, want)
	}
}
