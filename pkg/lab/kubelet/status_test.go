package kubelet

import (
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeInternalIPStaysOnLoopback(t *testing.T) {
	tests := []struct {
		i    int
		want string
	}{
		{1, "127.0.1.1"}, {254, "127.0.1.254"}, {255, "127.0.2.1"}, {1000, "127.0.4.238"},
	}
	seen := map[string]int{}
	for i := 1; i <= 1000; i++ {
		a := NodeInternalIP(i)
		if !a.IsLoopback() {
			t.Fatalf("node %d: %s is not a loopback address", i, a)
		}
		if last := a.As4()[3]; last == 0 || last == 255 {
			t.Fatalf("node %d: %s ends in .0 or .255", i, a)
		}
		if j, dup := seen[a.String()]; dup {
			t.Fatalf("nodes %d and %d share %s", j, i, a)
		}
		seen[a.String()] = i
	}
	for _, tt := range tests {
		if got := NodeInternalIP(tt.i).String(); got != tt.want {
			t.Errorf("NodeInternalIP(%d) = %s, want %s", tt.i, got, tt.want)
		}
	}
}

func TestPoolsSplitNodesInBlocks(t *testing.T) {
	pools := DefaultPools()
	tests := []struct {
		n    int
		want []string
	}{
		{1, []string{"np1"}},
		{3, []string{"np1", "np1", "np2"}},
		{4, []string{"np1", "np1", "np2", "np2"}},
		{5, []string{"np1", "np1", "np1", "np2", "np2"}},
	}
	for _, tt := range tests {
		for i := 1; i <= tt.n; i++ {
			if got := poolOf(pools, i, tt.n).Name; got != tt.want[i-1] {
				t.Errorf("%d nodes: node %d in pool %s, want %s", tt.n, i, got, tt.want[i-1])
			}
		}
	}
}

func TestNewNodeLooksLikeAKSNode(t *testing.T) {
	s := newSimulator(nil, Options{Nodes: 4})
	node := s.newNode(3)
	wantLabels := map[string]string{
		"kubernetes.io/hostname":           "lab-node-3",
		"kubernetes.io/os":                 "linux",
		"node.kubernetes.io/instance-type": "Standard_D8s_v5",
		"agentpool":                        "np2",
		"kubernetes.azure.com/agentpool":   "np2",
		"kubernetes.azure.com/mode":        "User",
		"topology.kubernetes.io/zone":      "lab-3",
		LabelSimulated:                     "true",
	}
	for k, v := range wantLabels {
		if node.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, node.Labels[k], v)
		}
	}
	if got := node.Status.Capacity.Pods().Value(); got != 110 {
		t.Errorf("capacity pods = %d, want 110", got)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage, corev1.ResourcePods} {
		c, a := node.Status.Capacity[r], node.Status.Allocatable[r]
		if c.IsZero() || a.IsZero() || a.Cmp(c) > 0 {
			t.Errorf("%s: capacity %s, allocatable %s; want both set, allocatable <= capacity", r, c.String(), a.String())
		}
	}
	if got := node.Status.NodeInfo.KubeletVersion; got != "v1.37.2" {
		t.Errorf("kubeletVersion = %s", got)
	}
	if got := node.Status.NodeInfo.ContainerRuntimeVersion; !regexp.MustCompile(`^containerd://\d`).MatchString(got) {
		t.Errorf("containerRuntimeVersion = %s", got)
	}
	wantAddr := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.1.3"}, {Type: corev1.NodeHostName, Address: "lab-node-3"}}
	if len(node.Status.Addresses) != 2 || node.Status.Addresses[0] != wantAddr[0] || node.Status.Addresses[1] != wantAddr[1] {
		t.Errorf("addresses = %v, want %v", node.Status.Addresses, wantAddr)
	}
	want := map[corev1.NodeConditionType]corev1.ConditionStatus{
		corev1.NodeReady: corev1.ConditionTrue, corev1.NodeMemoryPressure: corev1.ConditionFalse,
		corev1.NodeDiskPressure: corev1.ConditionFalse, corev1.NodePIDPressure: corev1.ConditionFalse,
		corev1.NodeNetworkUnavailable: corev1.ConditionFalse,
	}
	if len(node.Status.Conditions) != len(want) {
		t.Errorf("conditions = %v, want %d", node.Status.Conditions, len(want))
	}
	for _, c := range node.Status.Conditions {
		if want[c.Type] != c.Status || c.Reason == "" {
			t.Errorf("condition %s = %s (reason %q), want %s with a reason", c.Type, c.Status, c.Reason, want[c.Type])
		}
	}
	if other := s.newNode(3); other.Status.NodeInfo.BootID != node.Status.NodeInfo.BootID {
		t.Error("boot ID changes between two registrations of the same node")
	}
}

func TestNodeStatusChanged(t *testing.T) {
	s := newSimulator(nil, Options{Nodes: 2})
	base := s.newNode(1)
	later := s.newNode(1)
	later.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(time.Now().Add(time.Hour))
	if nodeStatusChanged(&base.Status, &later.Status) {
		t.Error("a new heartbeat time alone counts as a change")
	}
	tests := map[string]func(st *corev1.NodeStatus){
		"ready unknown": func(st *corev1.NodeStatus) {
			for i := range st.Conditions {
				if st.Conditions[i].Type == corev1.NodeReady {
					st.Conditions[i].Status = corev1.ConditionUnknown
					st.Conditions[i].Reason = "NodeStatusUnknown"
				}
			}
		},
		"condition missing": func(st *corev1.NodeStatus) { st.Conditions = st.Conditions[1:] },
		"address changed":   func(st *corev1.NodeStatus) { st.Addresses[0].Address = "127.0.9.9" },
		"version changed":   func(st *corev1.NodeStatus) { st.NodeInfo.KubeletVersion = "v1.30.0" },
		"capacity changed":  func(st *corev1.NodeStatus) { delete(st.Capacity, corev1.ResourcePods) },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cur := base.DeepCopy()
			mutate(&cur.Status)
			if !nodeStatusChanged(&cur.Status, &base.Status) {
				t.Error("change not detected")
			}
		})
	}
}

func TestDesiredNodeStatusKeepsOtherConditions(t *testing.T) {
	s := newSimulator(nil, Options{Nodes: 1})
	node := s.newNode(1)
	npd := corev1.NodeCondition{Type: "KernelDeadlock", Status: corev1.ConditionTrue, Reason: "DockerHung"}
	node.Status.Conditions = append(node.Status.Conditions, npd)
	desired := s.desiredNodeStatus(node, &node.Status)
	found := false
	for _, c := range desired.Conditions {
		found = found || (c.Type == npd.Type && c.Status == npd.Status && c.Reason == npd.Reason)
	}
	if !found {
		t.Errorf("desired conditions %v dropped the Node Problem Detector condition", desired.Conditions)
	}
	if nodeStatusChanged(&node.Status, &desired) {
		t.Error("a foreign condition makes the status look changed, so it would be rewritten forever")
	}
}

func TestNormalizeImageAndIDs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.27", "docker.io/library/nginx:1.27"},
		{"bitnami/redis:7", "docker.io/bitnami/redis:7"},
		{"kdiag.io/lab/http-server", "kdiag.io/lab/http-server:latest"},
		{"localhost/app:dev", "localhost/app:dev"},
		{"registry.k8s.io/coredns/coredns:v1.12.1", "registry.k8s.io/coredns/coredns:v1.12.1"},
		{"localhost:5000/app", "localhost:5000/app:latest"},
		{"mcr.microsoft.com/a/b@sha256:abc", "mcr.microsoft.com/a/b@sha256:abc"},
	}
	for _, tt := range tests {
		if got := NormalizeImage(tt.in); got != tt.want {
			t.Errorf("NormalizeImage(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := ImageID("nginx:1.27"); !regexp.MustCompile(`^docker\.io/library/nginx@sha256:[0-9a-f]{64}$`).MatchString(got) {
		t.Errorf("ImageID(nginx:1.27) = %s", got)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u1"}}
	id := ContainerID(pod, "app", 0)
	if !regexp.MustCompile(`^containerd://[0-9a-f]{64}$`).MatchString(id) {
		t.Errorf("ContainerID = %s", id)
	}
	if id == ContainerID(pod, "app", 1) || id == ContainerID(pod, "sidecar", 0) {
		t.Error("container IDs of a restart or of another container are equal")
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "uid-1", Generation: 1},
		Spec: corev1.PodSpec{
			NodeName:       "lab-node-1",
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "app", Image: "kdiag.io/lab/http-server:v1"}, {Name: "proxy", Image: "envoy:1"}},
		},
		Status: corev1.PodStatus{
			Phase:    corev1.PodPending,
			QOSClass: corev1.PodQOSBestEffort,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Unix(1000, 0))},
			},
		},
	}
}

func TestDesiredPodStatusRunsEveryContainer(t *testing.T) {
	pod := testPod()
	now := metav1.NewTime(time.Unix(2000, 0))
	net := podNet{hostIPs: []string{"127.0.1.1"}, podIPs: []string{"10.244.1.2"}}
	st := desiredPodStatus(pod, net, now)

	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.1.2" || st.HostIP != "127.0.1.1" ||
		len(st.PodIPs) != 1 || len(st.HostIPs) != 1 || st.StartTime == nil || !st.StartTime.Equal(&now) {
		t.Fatalf("status = phase %s podIP %s hostIP %s podIPs %v startTime %v", st.Phase, st.PodIP, st.HostIP, st.PodIPs, st.StartTime)
	}
	if st.QOSClass != corev1.PodQOSBestEffort || st.ObservedGeneration != 1 {
		t.Errorf("qosClass %s observedGeneration %d: want kept BestEffort and 1", st.QOSClass, st.ObservedGeneration)
	}
	wantConds := []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled}
	if len(st.Conditions) != len(wantConds) {
		t.Fatalf("conditions = %v, want %v", st.Conditions, wantConds)
	}
	for i, c := range st.Conditions {
		if c.Type != wantConds[i] || c.Status != corev1.ConditionTrue {
			t.Errorf("condition %d = %s %s, want %s True", i, c.Type, c.Status, wantConds[i])
		}
	}
	if !st.Conditions[4].LastTransitionTime.Equal(&pod.Status.Conditions[0].LastTransitionTime) {
		t.Error("the scheduler's PodScheduled condition was not kept")
	}
	if len(st.ContainerStatuses) != 2 || len(st.InitContainerStatuses) != 1 {
		t.Fatalf("%d container and %d init container statuses, want 2 and 1", len(st.ContainerStatuses), len(st.InitContainerStatuses))
	}
	for _, cs := range st.ContainerStatuses {
		if !cs.Ready || cs.Started == nil || !*cs.Started || cs.RestartCount != 0 || cs.State.Running == nil ||
			!regexp.MustCompile(`^containerd://[0-9a-f]{64}$`).MatchString(cs.ContainerID) || cs.ImageID == "" {
			t.Errorf("container %s: %+v", cs.Name, cs)
		}
	}
	if st.ContainerStatuses[0].Image != "kdiag.io/lab/http-server:v1" || st.ContainerStatuses[1].Image != "docker.io/library/envoy:1" {
		t.Errorf("images = %s, %s", st.ContainerStatuses[0].Image, st.ContainerStatuses[1].Image)
	}
	ic := st.InitContainerStatuses[0]
	if ic.State.Terminated == nil || ic.State.Terminated.Reason != "Completed" || ic.State.Terminated.ExitCode != 0 || !ic.Ready {
		t.Errorf("init container: %+v", ic)
	}

	// Reported once, the status is stable: a later sync changes nothing.
	pod.Status = st
	again := desiredPodStatus(pod, net, metav1.NewTime(now.Add(time.Hour)))
	if !podStatusEqual(&pod.Status, &again) {
		t.Errorf("status changes on a second sync:\nfirst  %+v\nsecond %+v", st, again)
	}
}

func TestDesiredPodStatusImageChangeRestartsContainer(t *testing.T) {
	pod := testPod()
	net := podNet{hostIPs: []string{"127.0.1.1"}, podIPs: []string{"10.244.1.2"}}
	pod.Status = desiredPodStatus(pod, net, metav1.NewTime(time.Unix(2000, 0)))
	oldID := pod.Status.ContainerStatuses[0].ContainerID
	pod.Spec.Containers[0].Image = "kdiag.io/lab/http-server:v2"
	st := desiredPodStatus(pod, net, metav1.NewTime(time.Unix(3000, 0)))
	cs := st.ContainerStatuses[0]
	if cs.RestartCount != 1 || cs.ContainerID == oldID || cs.LastTerminationState.Terminated == nil ||
		cs.LastTerminationState.Terminated.ContainerID != oldID || cs.Image != "kdiag.io/lab/http-server:v2" {
		t.Errorf("after an image change: %+v", cs)
	}
	if st.ContainerStatuses[1].RestartCount != 0 {
		t.Error("the unchanged container restarted")
	}
}

func TestDesiredPodStatusReadinessGatesAndSidecars(t *testing.T) {
	pod := testPod()
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: "mesh", Image: "istio/proxyv2", RestartPolicy: &always})
	pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb-ready"}}
	net := podNet{hostIPs: []string{"127.0.1.1"}, podIPs: []string{"10.244.1.2"}}
	st := desiredPodStatus(pod, net, metav1.NewTime(time.Unix(2000, 0)))
	if c := findCondition(st.Conditions, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ReadinessGatesNotReady" {
		t.Errorf("Ready with an unmet readiness gate = %s (%s)", c.Status, c.Reason)
	}
	if sc := st.InitContainerStatuses[1]; sc.State.Running == nil || !sc.Ready {
		t.Errorf("sidecar init container status: %+v", sc)
	}
	pod.Status = st
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: "example.com/lb-ready", Status: corev1.ConditionTrue})
	st = desiredPodStatus(pod, net, metav1.NewTime(time.Unix(2100, 0)))
	if c := findCondition(st.Conditions, corev1.PodReady); c.Status != corev1.ConditionTrue {
		t.Errorf("Ready with a met readiness gate = %s (%s)", c.Status, c.Reason)
	}
	if findCondition(st.Conditions, "example.com/lb-ready") == nil {
		t.Error("the readiness gate's condition was dropped")
	}
}

func TestStripManagedFieldsLeavesInputAlone(t *testing.T) {
	in := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	out, err := stripManagedFields(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*corev1.Pod); len(got.ManagedFields) != 0 || got.Name != "p" {
		t.Errorf("result = %+v, want the pod without managed fields", got.ObjectMeta)
	}
	if len(in.ManagedFields) != 1 {
		t.Error("the input pod was modified")
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}}}
	if out, _ := stripManagedFields(node); len(out.(*corev1.Node).ManagedFields) != 0 || len(node.ManagedFields) != 1 {
		t.Error("node: managed fields not stripped from a copy")
	}
}
