package node

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

func TestChecksDeclared(t *testing.T) {
	ct.AssertChecks(t, Checks(), findings.AreaNode, idNotReady, idPressure, idNetworkUnavailable, idProblemCondition,
		idCordoned, idOOMKilled, idEvicted, idBestEffort, idDiagnosticReport)
}

func TestHealthyClusterIsSilent(t *testing.T) {
	s := ct.Snapshot()
	for _, name := range []string{"n1", "n2"} {
		n := ct.ReadyNode(name)
		ct.SetAllocatable(&n, "4", "16Gi", 110)
		s.Nodes = append(s.Nodes, n)
		s.Leases = append(s.Leases, ct.NodeLease(name, 5*time.Second))
	}
	p := ct.RunningPod("shop", "web-1", "n1", map[string]string{"app": "web"})
	ct.SetMemory(&p, "app", "128Mi", "256Mi")
	s.Pods = append(s.Pods, p, ct.RunningPod("shop", "cache-1", "n2", nil)) // BestEffort, but no pressure
	if fs := Analyze(s); len(fs) != 0 {
		t.Fatalf("healthy cluster: want no findings, got:\n%s", ct.Dump(fs))
	}
	if fs := Analyze(nil); fs != nil {
		t.Fatalf("nil snapshot: want nil, got %v", fs)
	}
}

func TestNodeNotReady(t *testing.T) {
	const msg = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"
	tests := []struct {
		name    string
		build   func(s *cluster.Snapshot)
		node    string
		want    []string
		explain string // a phrase the explanation must hold
	}{
		{
			name: "False with fresh Lease: kubelet alive",
			build: func(s *cluster.Snapshot) {
				s.Nodes = append(s.Nodes, ct.NotReadyNode("bad", corev1.ConditionFalse, "KubeletNotReady", msg, 12*time.Minute))
				s.Leases = append(s.Leases, ct.NodeLease("bad", 5*time.Second))
				s.Events = append(s.Events,
					ct.NodeEvent("bad", corev1.EventTypeNormal, "NodeNotReady", "Node bad status is now: NodeNotReady", 12*time.Minute, 1),
					ct.NodeEvent("bad", corev1.EventTypeNormal, "NodeAllocatableEnforced", "Updated Node Allocatable limit", time.Hour, 1))
				ds := ct.RunningPod("kube-system", "kube-proxy-x", "bad", nil)
				ct.SetController(&ds, "apps/v1", "DaemonSet", "kube-proxy")
				gone := ct.RunningPod("shop", "web-2", "bad", nil)
				gone.DeletionTimestamp = &metav1.Time{Time: ct.Now().Add(-time.Minute)}
				s.Pods = append(s.Pods, ct.RunningPod("shop", "web-1", "bad", nil), ds, gone)
			},
			node: "bad",
			want: []string{"NotReady for 12m", "reason=KubeletNotReady", "NetworkPluginNotReady",
				"lastHeartbeatTime=2026-05-20T11:48:00Z (12m ago)", "spec.renewTime=2026-05-20T11:59:55Z (5s ago)",
				"node.kubernetes.io/not-ready:NoExecute", "3 pods bound", "1 from DaemonSets", "1 Terminating",
				"3 pods on it", "NodeNotReady x1, last 12m ago"},
			explain: "is alive",
		},
		{
			name: "Unknown with stale Lease: kubelet gone",
			build: func(s *cluster.Snapshot) {
				s.Nodes = append(s.Nodes, ct.NotReadyNode("bad", corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", 20*time.Minute))
				s.Leases = append(s.Leases, ct.NodeLease("bad", 21*time.Minute))
			},
			node:    "bad",
			want:    []string{"status is Unknown for 20m (NodeStatusUnknown)", "Lease last renewed 21m ago", "Kubelet stopped posting", "node.kubernetes.io/unreachable:NoExecute", "0 pods"},
			explain: "stopped heartbeating",
		},
		{
			name: "Unknown, Lease renewed since: kubelet back",
			build: func(s *cluster.Snapshot) {
				s.Nodes = append(s.Nodes, ct.NotReadyNode("bad", corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", 2*time.Minute))
				s.Leases = append(s.Leases, ct.NodeLease("bad", 3*time.Second))
			},
			node:    "bad",
			want:    []string{"status is Unknown for 2m", "Lease last renewed 3s ago"},
			explain: "reporting again",
		},
		{
			name: "Unknown, Lease not read: the controller's verdict stands",
			build: func(s *cluster.Snapshot) {
				s.Nodes = append(s.Nodes, ct.NotReadyNode("bad", corev1.ConditionUnknown, "NodeStatusUnknown", "", 2*time.Minute))
				s.Gaps = append(s.Gaps, ct.Gap(cluster.ResLeases))
			},
			node:    "bad",
			want:    []string{"not read"},
			explain: "stopped heartbeating",
		},
		{
			name: "no Ready condition and no Lease",
			build: func(s *cluster.Snapshot) {
				n := ct.ReadyNode("new")
				n.Status.Conditions = nil
				n.CreationTimestamp = metav1.NewTime(ct.Now().Add(-7 * time.Minute))
				s.Nodes = append(s.Nodes, n)
			},
			node:    "new",
			want:    []string{"not Ready for 7m", "no Ready condition", "no Lease kube-node-lease/new"},
			explain: "stopped heartbeating",
		},
		{
			name: "Leases not read: says so, concludes nothing about the heartbeat",
			build: func(s *cluster.Snapshot) {
				s.Nodes = append(s.Nodes, ct.NotReadyNode("bad", corev1.ConditionFalse, "KubeletNotReady", msg, 3*time.Minute))
				s.Gaps = append(s.Gaps, ct.Gap(cluster.ResLeases), ct.Gap(cluster.ResPods))
			},
			node:    "bad",
			want:    []string{"Lease kube-node-lease/bad not read", "pods not (completely) read"},
			explain: "does not report Ready",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			s.Nodes = append(s.Nodes, ct.ReadyNode("good"))
			s.Leases = append(s.Leases, ct.NodeLease("good", time.Second))
			tc.build(s)
			fs := Analyze(s)
			ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
			f := ct.MustFind(t, fs, idNotReady, tc.node)
			if f.Severity != findings.Critical || f.Object != (findings.ObjectRef{Kind: "Node", Name: tc.node}) {
				t.Errorf("severity/object = %s %v", f.Severity, f.Object)
			}
			ct.AssertMentions(t, f, tc.want...)
			if !strings.Contains(f.Explanation, tc.explain) {
				t.Errorf("explanation lacks %q: %s", tc.explain, f.Explanation)
			}
			if strings.Contains(strings.Join(f.Evidence, "\n"), "NodeAllocatableEnforced") {
				t.Errorf("routine Normal events must not be evidence: %v", f.Evidence)
			}
			for _, r := range f.Remediation {
				if r.Mutating() {
					t.Errorf("node-not-ready must offer only read-only commands, got %q", r.Command)
				}
			}
			ct.None(t, fs, idNotReady, "good")
		})
	}
}

func TestNodeChecksSilentWhenNodesNotRead(t *testing.T) {
	s := ct.Snapshot()
	n := ct.NotReadyNode("bad", corev1.ConditionUnknown, "NodeStatusUnknown", "", time.Hour)
	ct.SetNodeCondition(&n, corev1.NodeDiskPressure, corev1.ConditionTrue, "KubeletHasDiskPressure", "", time.Hour)
	ct.SetNodeCondition(&n, corev1.NodeNetworkUnavailable, corev1.ConditionTrue, "NoRouteCreated", "", time.Hour)
	ct.SetNodeCondition(&n, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "", time.Hour)
	ct.Cordon(&n, 48*time.Hour)
	s.Nodes = append(s.Nodes, n)
	s.Pods = append(s.Pods, ct.RunningPod("shop", "be", "bad", nil))
	s.Gaps = append(s.Gaps, ct.Gap(cluster.ResNodes))
	for _, f := range Analyze(s) {
		if f.ID != idOOMKilled && f.ID != idEvicted {
			t.Errorf("nodes are in s.Gaps, yet %s fired: %s", f.ID, f.Title)
		}
	}
}

func TestNodePressure(t *testing.T) {
	tests := []struct {
		name string
		cond corev1.NodeConditionType
		add  func(s *cluster.Snapshot, n *corev1.Node)
		sev  findings.Severity
		want []string
	}{
		{
			name: "memory pressure, no evictions yet: warning",
			cond: corev1.NodeMemoryPressure,
			add: func(s *cluster.Snapshot, n *corev1.Node) {
				ct.SetAllocatable(n, "4", "8Gi", 110)
				ct.Taint(n, corev1.TaintNodeMemoryPressure, corev1.TaintEffectNoSchedule, 4*time.Minute)
				p := ct.RunningPod("shop", "big", n.Name, nil)
				ct.SetMemory(&p, "app", "2Gi", "12Gi")
				s.Pods = append(s.Pods, p, ct.RunningPod("shop", "be", n.Name, nil))
			},
			sev: findings.Warning,
			want: []string{"MemoryPressure for 5m", "reason=KubeletHasInsufficientMemory", "kubelet has insufficient memory available",
				"node.kubernetes.io/memory-pressure:NoSchedule added", "requests 2Gi (25% of allocatable 8Gi), limits 12Gi (150%)",
				"1 container without a memory limit"},
		},
		{
			name: "memory pressure with evictions: critical",
			cond: corev1.NodeMemoryPressure,
			add: func(s *cluster.Snapshot, n *corev1.Node) {
				s.Pods = append(s.Pods, ct.EvictedPod("shop", "web-x", n.Name, "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi.", 2*time.Minute))
				s.Events = append(s.Events, ct.NodeEvent(n.Name, corev1.EventTypeWarning, "EvictionThresholdMet", "Attempting to reclaim memory", time.Minute, 3))
			},
			sev:  findings.Critical,
			want: []string{"the kubelet is evicting pods", "1 pod evicted or rejected by the kubelet for memory on this node: shop/web-x", "EvictionThresholdMet x3"},
		},
		{
			name: "disk pressure with failed image GC",
			cond: corev1.NodeDiskPressure,
			add: func(s *cluster.Snapshot, n *corev1.Node) {
				n.Status.Images = []corev1.ContainerImage{{Names: []string{"a"}, SizeBytes: 3 << 30}, {Names: []string{"b"}, SizeBytes: 1 << 30}}
				s.Events = append(s.Events, ct.NodeEvent(n.Name, corev1.EventTypeWarning, "FreeDiskSpaceFailed",
					"Failed to garbage collect required amount of images. Attempted to free 5368709120 bytes, but only found 0 bytes eligible to free.", 3*time.Minute, 7))
			},
			sev:  findings.Warning,
			want: []string{"DiskPressure for 5m", "status.images lists 2 images totalling 4Gi", "FreeDiskSpaceFailed x7", "no node.kubernetes.io/disk-pressure taint"},
		},
		{
			name: "PID pressure",
			cond: corev1.NodePIDPressure,
			add:  func(s *cluster.Snapshot, n *corev1.Node) {},
			sev:  findings.Warning,
			want: []string{"PIDPressure for 5m"},
		},
	}
	reasons := map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"KubeletHasInsufficientMemory", "kubelet has insufficient memory available"},
		corev1.NodeDiskPressure:   {"KubeletHasDiskPressure", "kubelet has disk pressure"},
		corev1.NodePIDPressure:    {"KubeletHasInsufficientPID", "kubelet has insufficient PID available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			n := ct.ReadyNode("hot")
			r := reasons[tc.cond]
			ct.SetNodeCondition(&n, tc.cond, corev1.ConditionTrue, r[0], r[1], 5*time.Minute)
			tc.add(s, &n)
			s.Nodes = append(s.Nodes, n, ct.ReadyNode("cool"))
			fs := Analyze(s)
			ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
			f := ct.MustFind(t, fs, idPressure, "hot")
			if f.Severity != tc.sev {
				t.Errorf("severity = %s, want %s", f.Severity, tc.sev)
			}
			ct.AssertMentions(t, f, tc.want...)
			if got := len(ct.WithID(fs, idPressure)); got != 1 {
				t.Errorf("want one pressure finding (one per node and condition), got %d", got)
			}
			ct.None(t, fs, idPressure, "cool")
		})
	}
}

func TestNodePressureOnePerCondition(t *testing.T) {
	s := ct.Snapshot()
	n := ct.ReadyNode("hot")
	ct.SetNodeCondition(&n, corev1.NodeMemoryPressure, corev1.ConditionTrue, "KubeletHasInsufficientMemory", "", time.Minute)
	ct.SetNodeCondition(&n, corev1.NodeDiskPressure, corev1.ConditionTrue, "KubeletHasDiskPressure", "", time.Minute)
	s.Nodes = append(s.Nodes, n)
	if got := len(ct.WithID(Analyze(s), idPressure)); got != 2 {
		t.Fatalf("memory and disk pressure on one node: want 2 findings, got %d", got)
	}
}

func TestNodeNetworkUnavailable(t *testing.T) {
	s := ct.Snapshot()
	n := ct.ReadyNode("nonet")
	ct.SetNodeCondition(&n, corev1.NodeNetworkUnavailable, corev1.ConditionTrue, "NoRouteCreated", "RouteController failed to create a route", 9*time.Minute)
	ct.Taint(&n, corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule, 9*time.Minute)
	ok := ct.ReadyNode("net")
	ct.SetNodeCondition(&ok, corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", "RouteController created a route", time.Hour)
	ok.Spec.PodCIDRs = []string{"10.244.1.0/24"}
	s.Nodes = append(s.Nodes, n, ok)
	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
	f := ct.MustFind(t, fs, idNetworkUnavailable, "nonet")
	if f.Severity != findings.Critical {
		t.Errorf("severity = %s", f.Severity)
	}
	ct.AssertMentions(t, f, "NetworkUnavailable for 9m (NoRouteCreated)", "RouteController failed to create a route",
		"node.kubernetes.io/network-unavailable:NoSchedule", "spec.podCIDR is empty")
	ct.None(t, fs, idNetworkUnavailable, "net")
}

func TestNodeProblemCondition(t *testing.T) {
	s := ct.Snapshot()
	n := ct.ReadyNode("sick")
	ct.SetNodeCondition(&n, "KernelDeadlock", corev1.ConditionTrue, "DockerHung", "kernel: INFO: task docker:20744 blocked for more than 120 seconds.", 30*time.Minute)
	ct.SetNodeCondition(&n, "ReadonlyFilesystem", corev1.ConditionTrue, "FilesystemIsReadOnly", "Node condition ReadonlyFilesystem is now: True", 2*time.Hour)
	ct.SetNodeHeartbeat(&n, "ReadonlyFilesystem", time.Hour)
	ct.SetNodeCondition(&n, "FrequentKubeletRestart", corev1.ConditionFalse, "NoFrequentKubeletRestart", "kubelet is functioning properly", time.Hour)
	s.Events = append(s.Events, ct.NodeEvent("sick", corev1.EventTypeWarning, "DockerHung", "task docker:20744 blocked", 29*time.Minute, 1))
	healthy := ct.ReadyNode("fine")
	ct.SetNodeCondition(&healthy, "KernelDeadlock", corev1.ConditionFalse, "KernelHasNoDeadlock", "kernel has no deadlock", time.Hour)
	s.Nodes = append(s.Nodes, n, healthy)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
	got := ct.WithID(fs, idProblemCondition)
	if len(got) != 2 {
		t.Fatalf("want 2 problem conditions (KernelDeadlock, ReadonlyFilesystem), got:\n%s", ct.Dump(got))
	}
	var kd, ro findings.Finding
	for _, f := range got {
		if strings.Contains(f.Title, "KernelDeadlock") {
			kd = f
		} else {
			ro = f
		}
	}
	if kd.Severity != findings.Warning || kd.Object.Name != "sick" {
		t.Errorf("KernelDeadlock: %s %v", kd.Severity, kd.Object)
	}
	ct.AssertMentions(t, &kd, "KernelDeadlock=True for 30m (DockerHung)", "blocked for more than 120 seconds", "DockerHung x1")
	if strings.Contains(kd.Title, "stale") {
		t.Errorf("fresh heartbeat reported as stale: %s", kd.Title)
	}
	ct.AssertMentions(t, &ro, "ReadonlyFilesystem=True for 120m", "heartbeat is stale", "lastHeartbeatTime=2026-05-20T11:00:00Z (60m ago)")
	ct.None(t, fs, idProblemCondition, "fine")
}

func TestNodeCordoned(t *testing.T) {
	tests := []struct {
		name  string
		node  func() corev1.Node
		sev   findings.Severity
		patch bool
		want  []string
	}{
		{
			name:  "recent cordon: info, uncordon offered",
			node:  func() corev1.Node { n := ct.ReadyNode("c"); ct.Cordon(&n, 2*time.Hour); return n },
			sev:   findings.Info,
			patch: true,
			want:  []string{"spec.unschedulable=true", "cordoned for 120m", "node.kubernetes.io/unschedulable:NoSchedule added", "1 pod still on the node", "1 of them not from DaemonSets"},
		},
		{
			name:  "cordoned for 3 days: warning",
			node:  func() corev1.Node { n := ct.ReadyNode("c"); ct.Cordon(&n, 72*time.Hour); return n },
			sev:   findings.Warning,
			patch: true,
			want:  []string{"cordoned for 3d", "more than 24h"},
		},
		{
			name: "cordoned and NotReady: no uncordon",
			node: func() corev1.Node {
				n := ct.NotReadyNode("c", corev1.ConditionUnknown, "NodeStatusUnknown", "", time.Hour)
				ct.Cordon(&n, 72*time.Hour)
				return n
			},
			sev:  findings.Warning,
			want: []string{"the node is not Ready"},
		},
		{
			name: "no taint time: age unknown, info",
			node: func() corev1.Node { n := ct.ReadyNode("c"); n.Spec.Unschedulable = true; return n },
			sev:  findings.Info,
			want: []string{"when it was cordoned is unknown"},
			// uncordon is still offered for a Ready node
			patch: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			s.Nodes = append(s.Nodes, tc.node(), ct.ReadyNode("open"))
			s.Pods = append(s.Pods, ct.RunningPod("shop", "web-1", "c", nil))
			fs := Analyze(s)
			ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
			f := ct.MustFind(t, fs, idCordoned, "c")
			if f.Severity != tc.sev {
				t.Errorf("severity = %s, want %s", f.Severity, tc.sev)
			}
			ct.AssertMentions(t, f, tc.want...)
			m := ct.Mutating(f)
			if tc.patch != (len(m) == 1) {
				t.Fatalf("want uncordon patch: %v, got %d mutating remediations", tc.patch, len(m))
			}
			if tc.patch {
				a := m[0].Action
				if a.Resource != "nodes" || a.Name != "c" || string(a.Patch) != `{"spec":{"unschedulable":false}}` || a.PatchType != "application/merge-patch+json" {
					t.Errorf("uncordon action = %+v (%s)", a, a.Patch)
				}
				if m[0].Command != `kubectl patch node c --type=merge -p '{"spec":{"unschedulable":false}}'` {
					t.Errorf("uncordon command = %s", m[0].Command)
				}
			}
			ct.None(t, fs, idCordoned, "open")
		})
	}
}

func TestOOMKilled(t *testing.T) {
	s := ct.Snapshot()
	n := ct.ReadyNode("n1")
	ct.SetAllocatable(&n, "4", "8Gi", 110)
	s.Nodes = append(s.Nodes, n, ct.ReadyNode("n2"))

	d, rs := ct.Deployment("shop", "order", 2, map[string]string{"app": "order"})
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: "example/order:1"}}
	tmplPod := corev1.Pod{Spec: d.Spec.Template.Spec}
	ct.SetMemory(&tmplPod, "app", "128Mi", "256Mi")
	d.Spec.Template.Spec = tmplPod.Spec
	s.Deployments, s.ReplicaSets = append(s.Deployments, d), append(s.ReplicaSets, rs)

	killed := ct.RunningPod("shop", "order-1", "n1", map[string]string{"app": "order"})
	ct.OwnPod(&killed, rs)
	ct.SetMemory(&killed, "app", "128Mi", "256Mi")
	ct.OOMKilled(&killed, "app", 4, 18*time.Minute)
	killed2 := ct.RunningPod("shop", "order-2", "n1", map[string]string{"app": "order"})
	ct.OwnPod(&killed2, rs)
	ct.SetMemory(&killed2, "app", "128Mi", "256Mi")
	ct.OOMKilled(&killed2, "app", 1, 40*time.Minute)
	unlimited := ct.RunningPod("batch", "etl", "n1", nil)
	ct.OOMKilled(&unlimited, "app", 2, time.Hour)
	healthy := ct.RunningPod("shop", "web", "n2", nil)
	ct.SetMemory(&healthy, "app", "128Mi", "256Mi")
	s.Pods = append(s.Pods, killed, killed2, unlimited, healthy)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
	if got := ct.WithID(fs, idOOMKilled); len(got) != 1 {
		t.Fatalf("want one oom-killed finding (grouped by node), got:\n%s", ct.Dump(got))
	}
	f := ct.MustFind(t, fs, idOOMKilled, "n1")
	if f.Severity != findings.Warning || f.Object.Kind != "Node" {
		t.Errorf("severity/object = %s %v", f.Severity, f.Object)
	}
	ct.AssertMentions(t, f, "3 containers OOMKilled, most recently shop/order-1/app 18m ago (limit 256Mi)",
		"shop/order-1 container app (Deployment order): lastState.terminated.reason=OOMKilled exitCode=137",
		"restartCount=4", "memory request 128Mi, limit 256Mi", "batch/etl container app", "memory request none, no limit",
		"1 container without a memory limit", "status.allocatable.memory=8Gi")
	m := ct.Mutating(f)
	if len(m) != 1 {
		t.Fatalf("want exactly one limit patch (one per owner and container; none without a limit), got %d: %+v", len(m), m)
	}
	a := m[0].Action
	want := `{"spec":{"template":{"spec":{"containers":[{"name":"app","resources":{"limits":{"memory":"384Mi"}}}]}}}}`
	if a.Group != "apps" || a.Resource != "deployments" || a.Namespace != "shop" || a.Name != "order" ||
		a.PatchType != "application/strategic-merge-patch+json" || string(a.Patch) != want {
		t.Errorf("patch action = %+v %s, want deployments shop/order %s", a, a.Patch, want)
	}
	if !strings.Contains(m[0].Command, "kubectl patch deployment order -n shop --type=strategic") {
		t.Errorf("command = %s", m[0].Command)
	}
	var topCmds int
	for _, r := range f.Remediation {
		if strings.HasPrefix(r.Command, "kubectl top pod -n ") {
			topCmds++
		}
	}
	if topCmds != 2 {
		t.Errorf("want kubectl top for namespaces batch and shop, got %d", topCmds)
	}
	ct.None(t, fs, idOOMKilled, "n2")
}

func TestOOMKilledVariants(t *testing.T) {
	t.Run("old kill is info", func(t *testing.T) {
		s := ct.Snapshot()
		p := ct.RunningPod("shop", "old", "n1", nil)
		ct.OOMKilled(&p, "app", 1, 72*time.Hour)
		s.Pods = append(s.Pods, p)
		f := ct.MustFind(t, Analyze(s), idOOMKilled, "n1")
		if f.Severity != findings.Info {
			t.Errorf("kill 3d ago: severity %s, want info", f.Severity)
		}
	})
	t.Run("current state OOMKilled in a StatefulSet with LimitRange default", func(t *testing.T) {
		s := ct.Snapshot()
		st := stsWithContainer("db", "db")
		s.StatefulSets = append(s.StatefulSets, st)
		p := ct.RunningPod("data", "db-0", "n1", nil)
		p.Spec.Containers[0].Name = "db"
		p.Status.ContainerStatuses[0].Name = "db"
		ct.SetController(&p, "apps/v1", "StatefulSet", "db")
		ct.SetMemory(&p, "db", "", "1Gi") // from a LimitRange: not in the template
		p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137, FinishedAt: metav1.NewTime(ct.Now().Add(-time.Minute))}}
		s.Pods = append(s.Pods, p)
		f := ct.MustFind(t, Analyze(s), idOOMKilled, "n1")
		ct.AssertMentions(t, f, "state.terminated.reason=OOMKilled", "(StatefulSet db)")
		m := ct.Mutating(f)
		if len(m) != 1 || m[0].Action.Resource != "statefulsets" || !strings.Contains(string(m[0].Action.Patch), `"memory":"1536Mi"`) {
			t.Fatalf("want a statefulset patch to 1536Mi, got %+v", m)
		}
	})
	t.Run("kernel OOM killer events alone", func(t *testing.T) {
		s := ct.Snapshot()
		s.Nodes = append(s.Nodes, ct.ReadyNode("n1"))
		s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeWarning, "SystemOOM", "System OOM encountered, victim process: java, pid: 4242", 5*time.Minute, 2))
		f := ct.MustFind(t, Analyze(s), idOOMKilled, "n1")
		ct.AssertMentions(t, f, "OOM killer ran 2 times", "victim process: java")
	})
	t.Run("pods not read: silent", func(t *testing.T) {
		s := ct.Snapshot()
		p := ct.RunningPod("shop", "x", "n1", nil)
		ct.OOMKilled(&p, "app", 1, time.Minute)
		s.Pods = append(s.Pods, p)
		s.Gaps = append(s.Gaps, ct.Gap(cluster.ResPods), ct.Gap(cluster.ResEvents))
		if got := ct.WithID(Analyze(s), idOOMKilled); len(got) != 0 {
			t.Fatalf("pods in s.Gaps: want no oom-killed, got %s", ct.Dump(got))
		}
	})
	t.Run("owner not read: no patch, still reported", func(t *testing.T) {
		s := ct.Snapshot()
		_, rs := ct.Deployment("shop", "order", 1, nil)
		p := ct.RunningPod("shop", "order-1", "n1", nil)
		ct.OwnPod(&p, rs)
		ct.SetMemory(&p, "app", "", "256Mi")
		ct.OOMKilled(&p, "app", 1, time.Minute)
		s.Pods = append(s.Pods, p)
		s.Gaps = append(s.Gaps, ct.Gap(cluster.ResDeployments), ct.Gap(cluster.ResReplicaSets))
		f := ct.MustFind(t, Analyze(s), idOOMKilled, "n1")
		if len(ct.Mutating(f)) != 0 {
			t.Errorf("owner not in the snapshot: no patch expected, got %+v", ct.Mutating(f))
		}
	})
}

func stsWithContainer(name, container string) (st appsv1.StatefulSet) {
	st.Namespace, st.Name = "data", name
	st.Spec.Template.Spec.Containers = []corev1.Container{{Name: container, Image: "example/db:1"}}
	return st
}

func TestRaisedLimit(t *testing.T) {
	for in, want := range map[string]string{"256Mi": "384Mi", "1Gi": "1536Mi", "100M": "144Mi", "1": "1Mi", "333Mi": "500Mi"} {
		if got := raisedLimit(mustQ(in)); got.String() != want {
			t.Errorf("raisedLimit(%s) = %s, want %s", in, got.String(), want)
		}
	}
}

func mustQ(s string) resource.Quantity { return resource.MustParse(s) }

func TestPodEvicted(t *testing.T) {
	s := ct.Snapshot()
	_, rs := ct.Deployment("shop", "web", 3, nil)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	e1 := ct.EvictedPod("shop", "web-a", "n1", "The node was low on resource: memory. Threshold quantity: 100Mi, available: 60Mi. Container app was using 900Mi, request is 0.", 3*time.Minute)
	e2 := ct.EvictedPod("shop", "web-b", "n2", "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 9Gi.", 30*time.Minute)
	e3 := ct.EvictedPod("shop", "web-c", "n1", "The node had condition: [DiskPressure]. ", 40*time.Minute)
	for _, p := range []*corev1.Pod{&e1, &e2, &e3} {
		ct.OwnPod(p, rs)
	}
	bare := ct.EvictedPod("tools", "debug", "n1", "The node was low on resource: memory.", 50*time.Hour)
	failed := ct.RunningPod("shop", "job-x", "n1", nil) // Failed, but not evicted
	failed.Status.Phase = corev1.PodFailed
	failed.Status.Reason = "DeadlineExceeded"
	s.Pods = append(s.Pods, e1, e2, e3, bare, failed, ct.RunningPod("shop", "web-d", "n1", nil))

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
	got := ct.WithID(fs, idEvicted)
	if len(got) != 2 {
		t.Fatalf("want 2 eviction findings (Deployment web, bare pod debug), got:\n%s", ct.Dump(got))
	}
	f := ct.MustFind(t, fs, idEvicted, "web")
	if f.Object != (findings.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"}) || f.Severity != findings.Warning {
		t.Errorf("object/severity = %v %s", f.Object, f.Severity)
	}
	ct.AssertMentions(t, f, "3 pods evicted by the kubelet (2 for ephemeral-storage, 1 for memory), latest 3m ago",
		"nodes: 2 n1, 1 n2", "shop/web-a on node n1, 3m ago: The node was low on resource: memory",
		"The node had condition: [DiskPressure]")
	old := ct.MustFind(t, fs, idEvicted, "debug")
	if old.Severity != findings.Info || old.Object.Kind != "Pod" {
		t.Errorf("2-day-old eviction of a bare pod: %s %v", old.Severity, old.Object)
	}
	ct.None(t, fs, idEvicted, "job-x")
}

func TestBestEffortOnPressuredNode(t *testing.T) {
	s := ct.Snapshot()
	hot := ct.ReadyNode("hot")
	ct.SetNodeCondition(&hot, corev1.NodeMemoryPressure, corev1.ConditionTrue, "KubeletHasInsufficientMemory", "", 5*time.Minute)
	s.Nodes = append(s.Nodes, hot, ct.ReadyNode("cool"))
	be := ct.RunningPod("shop", "cache-0", "hot", nil)
	ct.SetController(&be, "apps/v1", "StatefulSet", "cache")
	burstable := ct.RunningPod("shop", "web-1", "hot", nil)
	ct.SetMemory(&burstable, "app", "64Mi", "")
	qos := ct.RunningPod("shop", "api-1", "hot", nil) // qosClass from the API server wins
	qos.Status.QOSClass = corev1.PodQOSGuaranteed
	done := ct.RunningPod("shop", "job-1", "hot", nil)
	done.Status.Phase = corev1.PodSucceeded
	s.Pods = append(s.Pods, be, burstable, qos, done, ct.RunningPod("shop", "be-cool", "cool", nil))

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaNode)
	f := ct.MustFind(t, fs, idBestEffort, "hot")
	if f.Severity != findings.Warning {
		t.Errorf("severity = %s", f.Severity)
	}
	ct.AssertMentions(t, f, "under MemoryPressure and runs 1 BestEffort pod", "shop/cache-0 (StatefulSet cache): no CPU or memory requests or limits")
	for _, e := range f.Evidence {
		if strings.Contains(e, "web-1") || strings.Contains(e, "api-1") || strings.Contains(e, "job-1") {
			t.Errorf("non-BestEffort or finished pod listed: %s", e)
		}
	}
	ct.None(t, fs, idBestEffort, "cool")

	t.Run("pods not read: silent", func(t *testing.T) {
		s2 := ct.Snapshot()
		s2.Nodes = append(s2.Nodes, hot)
		s2.Pods = append(s2.Pods, be)
		s2.Gaps = append(s2.Gaps, ct.Gap(cluster.ResPods))
		ct.None(t, Analyze(s2), idBestEffort, "hot")
	})
}

func TestDeterministic(t *testing.T) {
	s1, s2 := bigSnapshot(50, 20), bigSnapshot(50, 20)
	a, _ := json.Marshal(Analyze(s1))
	b, _ := json.Marshal(Analyze(s2))
	if string(a) != string(b) {
		t.Fatal("two runs on equal snapshots differ")
	}
	if len(a) < 100 {
		t.Fatal("the big snapshot should produce findings")
	}
}
