package enrich

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

const (
	uid = "0e5c1f7a-3b2d-4c8e-9f10-aabbccddeeff"
	cid = "4f2b9c1d0e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"
)

func TestParseCgroupPath(t *testing.T) {
	under := strings.ReplaceAll(uid, "-", "_")
	tests := []struct {
		path   string
		ok     bool
		podUID string
		contID string
	}{
		{"/kubepods/burstable/pod" + uid + "/" + cid, true, uid, cid},
		{"/kubepods/besteffort/pod" + uid + "/" + cid, true, uid, cid},
		{"/kubepods/pod" + uid + "/" + cid, true, uid, cid}, // guaranteed QoS
		{"/kubepods/burstable/pod" + uid, true, uid, ""},
		{"/process_api/x/kdiag-test-1/kubepods/burstable/pod" + uid + "/" + cid, true, uid, cid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/cri-containerd-" + cid + ".scope", true, uid, cid},
		{"/kubepods.slice/kubepods-pod" + under + ".slice/crio-" + cid + ".scope", true, uid, cid},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/docker-" + cid + ".scope", true, uid, cid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice", true, uid, ""},
		{"/system.slice/containerd.service", false, "", ""},
		{"/", false, "", ""},
		{"/user.slice/user-0.slice/session-1.scope", false, "", ""},
	}
	for _, tt := range tests {
		ref, ok := ParseCgroupPath(tt.path)
		if ok != tt.ok || ref.PodUID != tt.podUID || ref.ContainerID != tt.contID {
			t.Errorf("ParseCgroupPath(%q) = %+v, %v; want {%s %s}, %v", tt.path, ref, ok, tt.podUID, tt.contID, tt.ok)
		}
	}
}

func TestRefFromProcCgroupsPrefersTheContainerLine(t *testing.T) {
	cgs := []ProcCgroup{
		{Controllers: "cpu", Path: "/kubepods/burstable/pod" + uid},
		{Controllers: "memory", Path: "/kubepods/burstable/pod" + uid + "/" + cid},
		{Controllers: "", Path: "/"},
	}
	ref, ok := RefFromProcCgroups(cgs)
	if !ok || ref.ContainerID != cid || ref.PodUID != uid {
		t.Errorf("got %+v %v, want the memory line's container", ref, ok)
	}
	if _, ok := RefFromProcCgroups([]ProcCgroup{{Path: "/"}, {Controllers: "memory", Path: "/process_api/1"}}); ok {
		t.Error("a process outside kubepods was attributed to a pod")
	}
}

// fakeProc builds a /proc with pids whose cgroups and netns are given.
func fakeProc(t *testing.T, pids map[string][2]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, v := range pids {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(v[0]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("net:["+v[1]+"]", filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func pod(name, ns, podUID, containerID string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: typesUID(podUID), Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{
			PodIP:             "10.244.0.5",
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + containerID}},
		},
	}
}

func TestResolveByPIDAndNetns(t *testing.T) {
	proc := fakeProc(t, map[string][2]string{
		"1":   {"0::/init.scope\n", "4026531840"},
		"100": {"4:memory:/kubepods/burstable/pod" + uid + "/" + cid + "\n0::/\n", "4026532001"},
		"200": {"0::/system.slice/foo.service\n", "4026531840"},
	})
	src := NewStaticSource([]*corev1.Pod{pod("web-1", "shop", uid, cid, nil)}, []*corev1.Service{{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"}},
	}})
	e := New(Options{Source: src, NodeName: "n1", ProcRoot: proc, Cgroup2Root: t.TempDir()})
	want := K8s{Node: "n1", Namespace: "shop", Pod: "web-1", Container: "app", PodUID: uid}
	if got := e.Resolve(Keys{PID: 100}); got != want {
		t.Errorf("by pid: %+v, want %+v", got, want)
	}
	if got := e.Resolve(Keys{Netns: 4026532001}); got != want {
		t.Errorf("by netns: %+v, want %+v", got, want)
	}
	if got := e.Resolve(Keys{Netns: 4026531840, PID: 200}); got != (K8s{Node: "n1"}) {
		t.Errorf("host process and host netns named a pod: %+v", got)
	}
	if got := e.Peer(netip.MustParseAddr("10.96.0.20")).String(); got != "svc/shop/orders" {
		t.Errorf("service IP: %q", got)
	}
	if got := e.Peer(netip.MustParseAddr("10.244.0.5")).String(); got != "pod/shop/web-1" {
		t.Errorf("pod IP: %q", got)
	}
	if p := e.Peer(netip.MustParseAddr("1.1.1.1")); p != nil {
		t.Errorf("unknown IP named %v", p)
	}
	// Without a source: no names, no crash.
	bare := New(Options{NodeName: "n1", ProcRoot: proc, Cgroup2Root: t.TempDir()})
	if got := bare.Resolve(Keys{PID: 100}); got.Pod != "" || got.PodUID != uid || got.Node != "n1" {
		t.Errorf("without a source: %+v", got)
	}
}

func TestResolveByCgroupID(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "kubepods", "burstable", "pod"+uid, cid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := CgroupID(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := NewStaticSource([]*corev1.Pod{pod("web-1", "shop", uid, cid, nil)}, nil)
	e := New(Options{Source: src, NodeName: "n1", ProcRoot: t.TempDir(), Cgroup2Root: root})
	if got := e.Resolve(Keys{CgroupID: id}); got.Pod != "web-1" || got.Container != "app" {
		t.Errorf("by cgroup id: %+v", got)
	}
}

func TestSelect(t *testing.T) {
	cg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cg, "kubepods", "burstable", "pod"+uid, cid), 0o755); err != nil {
		t.Fatal(err)
	}
	proc := fakeProc(t, map[string][2]string{
		"1":   {"0::/\n", "4026531840"},
		"100": {"0::/kubepods/burstable/pod" + uid + "/" + cid + "\n", "4026532001"},
	})
	src := NewStaticSource([]*corev1.Pod{
		pod("web-1", "shop", uid, cid, map[string]string{"app": "web"}),
		pod("db-1", "shop", "11111111-2222-3333-4444-555555555555", "ff", nil),
	}, nil)
	e := New(Options{Source: src, NodeName: "n1", ProcRoot: proc, Cgroup2Root: cg})

	sel, err := e.Select(Filter{Namespace: "shop", Selector: labels.SelectorFromSet(labels.Set{"app": "web"})})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.PodUIDs) != 1 || !sel.PodUIDs[uid] || len(sel.CgroupIDs) != 2 || !sel.Netns[4026532001] || len(sel.Netns) != 1 {
		t.Errorf("selection = pods %v cgroups %v netns %v; want web-1, its pod and container cgroups, its netns", sel.PodUIDs, sel.CgroupIDs, sel.Netns)
	}
	if !sel.Match(K8s{PodUID: uid}) || sel.Match(K8s{PodUID: "other"}) {
		t.Error("Match disagrees with the selection")
	}
	cont, err := e.Select(Filter{Container: "app", PodPrefix: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cont.CgroupIDs) != 1 || len(cont.Netns) != 0 {
		t.Errorf("container filter: cgroups %v netns %v; want only the container's cgroup and no netns", cont.CgroupIDs, cont.Netns)
	}

	errs := map[string]Filter{
		"no pod matches":  {Namespace: "nope"},
		"this is node n1": {Node: "n2"},
	}
	for want, f := range errs {
		if _, err := e.Select(f); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Select(%s) err = %v, want %q", f, err, want)
		}
	}
	if sel, err := e.Select(Filter{}); sel != nil || err != nil {
		t.Errorf("empty filter: %v, %v", sel, err)
	}
	bare := New(Options{NodeName: "n1", ProcRoot: proc, Cgroup2Root: cg})
	if _, err := bare.Select(Filter{Namespace: "shop"}); err == nil || !strings.Contains(err.Error(), "needs Kubernetes access") {
		t.Errorf("filter without a source: %v", err)
	}
}

// A machine hosting several nodes (the lab) has an enricher without a node
// name; --node then selects the pods of one of them, and events carry each
// pod's own node.
func TestSelectOnAMachineHostingSeveralNodes(t *testing.T) {
	const uid2, cid2 = "11111111-2222-3333-4444-555555555555", "ff"
	cg := t.TempDir()
	for _, p := range []string{filepath.Join("pod"+uid, cid), filepath.Join("pod"+uid2, cid2)} {
		if err := os.MkdirAll(filepath.Join(cg, "kubepods", "burstable", p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	proc := fakeProc(t, map[string][2]string{"1": {"0::/\n", "4026531840"}})
	other := pod("web-2", "shop", uid2, cid2, nil)
	other.Spec.NodeName = "n2"
	e := New(Options{Source: NewStaticSource([]*corev1.Pod{pod("web-1", "shop", uid, cid, nil), other}, nil), ProcRoot: proc, Cgroup2Root: cg})

	sel, err := e.Select(Filter{Namespace: "shop", Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.PodUIDs) != 1 || !sel.PodUIDs[uid2] {
		t.Errorf("--node n2 selected pods %v, want only web-2 (%s)", sel.PodUIDs, uid2)
	}
	if k := e.named(ContainerRef{PodUID: uid2, ContainerID: cid2}); k.Node != "n2" || k.Pod != "web-2" {
		t.Errorf("event of web-2 labelled %+v, want node n2 and pod web-2", k)
	}
}

func TestCgroupRootsFromMountinfo(t *testing.T) {
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := `25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
`
	if err := os.WriteFile(filepath.Join(proc, "self", "mountinfo"), []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Cgroup2Root(proc); err != nil || got != "/sys/fs/cgroup/unified" {
		t.Errorf("Cgroup2Root = %q, %v", got, err)
	}
	if got, err := CgroupV1Root(proc, "memory"); err != nil || got != "/sys/fs/cgroup/memory" {
		t.Errorf("CgroupV1Root(memory) = %q, %v", got, err)
	}
	if _, err := CgroupV1Root(proc, "cpu"); err == nil {
		t.Error("CgroupV1Root(cpu) found a mount that is not there")
	}
	if _, err := Cgroup2Root(t.TempDir()); err == nil {
		t.Error("Cgroup2Root without mountinfo succeeded")
	}
}

func typesUID(s string) types.UID { return types.UID(s) }
