package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kdiag/kdiag/pkg/lab/cgroups"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
)

const envRole = "KDIAG_RUNTIME_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "hog":
		fmt.Println("hogging")
		var keep [][]byte
		for {
			b := make([]byte, 4<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
			time.Sleep(time.Millisecond)
		}
	case "serve":
		// Listens on $PORT and prints its environment and arguments.
		fmt.Println("args", strings.Join(os.Args[1:], " "))
		fmt.Println("env POD_IP=" + os.Getenv("POD_IP") + " POD_NAME=" + os.Getenv("POD_NAME") + " CONFIG=" + os.Getenv("CONFIG"))
		l, err := net.Listen("tcp", ":"+os.Getenv("PORT"))
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		for {
			c, err := l.Accept()
			if err == nil {
				c.Close()
			}
		}
	case "exit":
		fmt.Println("exiting 7")
		os.Exit(7)
	}
	os.Exit(m.Run())
}

// testResolver runs images "test/<role>" as this test binary in that role.
func testResolver(seen map[string]map[string]string) Resolver {
	return func(_ context.Context, pod *corev1.Pod, c *corev1.Container, mounts map[string]string) (Command, bool, error) {
		role, ok := strings.CutPrefix(c.Image, "test/")
		if !ok {
			return Command{}, false, nil
		}
		if seen != nil {
			seen[c.Name] = mounts
		}
		exe, err := os.Executable()
		if err != nil {
			return Command{}, false, err
		}
		return Command{Path: exe, Args: append([]string{"-test.run=^$"}, c.Args...), Env: []string{envRole + "=" + role}}, true, nil
	}
}

type bed struct {
	rt      *Runtime
	net     podnet.Network
	gw      netip.Addr
	changed chan string
}

func newBed(t testing.TB, objs ...corev1.ConfigMap) *bed {
	t.Helper()
	if err := podnet.Check(); err != nil {
		t.Skipf("real pods: %v", err)
	}
	roots, err := cgroups.Detect()
	if err != nil {
		t.Skipf("real pods: %v", err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := "r" + hex.EncodeToString(b)
	ctx := context.Background()
	n, err := podnet.Create(ctx, id)
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	parent := cgroups.Parent("kdiag-rttest-" + id)
	gw := netip.MustParsePrefix("10.240.7.1/24")
	if err := n.AddGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset()
	for i := range objs {
		if _, err := cs.CoreV1().ConfigMaps(objs[i].Namespace).Create(ctx, &objs[i], metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	changed := make(chan string, 1000)
	rt, err := New(Options{
		Resolver: testResolver(nil), Network: n, Cgroups: roots, Parent: parent, Dir: t.TempDir(),
		Client: cs, BackOff: 200 * time.Millisecond, MaxBackOff: time.Second,
		// Warnings (a container that did not start) explain a failure.
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Notify: func(k string) {
			select {
			case changed <- k:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Shutdown(cctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := roots.RemoveAll(parent); err != nil {
			t.Errorf("remove cgroups: %v", err)
		}
		if err := n.Delete(cctx); err != nil {
			t.Errorf("delete network: %v", err)
		}
	})
	return &bed{rt: rt, net: n, gw: gw.Addr(), changed: changed}
}

func testPod(name string, c ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: c},
	}
}

// waitState polls the pod's state until ok accepts it.
func (b *bed) waitState(t *testing.T, uid types.UID, what string, ok func(PodState) bool) PodState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last PodState
	for time.Now().Before(deadline) {
		st, found := b.rt.State(uid)
		if found && ok(st) {
			return st
		}
		last = st
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pod %s: no %s within 30s; last state %+v", uid, what, last)
	return last
}

func TestOOMKilledAndRestarted(t *testing.T) {
	b := newBed(t)
	pod := testPod("hog", corev1.Container{Name: "hog", Image: "test/hog", Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
	}})
	ok, err := b.rt.Sync(context.Background(), pod, netip.MustParsePrefix("10.240.7.2/24"), b.gw)
	if err != nil || !ok {
		t.Fatalf("Sync = %v, %v; want a real pod", ok, err)
	}
	st := b.waitState(t, pod.UID, "OOM kill and restart", func(st PodState) bool {
		c := st.Containers[0]
		return c.RestartCount >= 1 && c.LastTerminationState.Terminated != nil
	})
	c := st.Containers[0]
	term := c.LastTerminationState.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Errorf("last termination %s exit %d, want OOMKilled exit 137", term.Reason, term.ExitCode)
	}
	if !strings.HasPrefix(c.ContainerID, "containerd://") || term.ContainerID == c.ContainerID && c.State.Running != nil {
		t.Errorf("container IDs: current %q, terminated %q", c.ContainerID, term.ContainerID)
	}
	// The logs of the first run stay, as `kubectl logs --previous` shows them.
	prev, _, err := b.rt.LogFile(pod.UID, "hog", true)
	if err != nil {
		t.Fatalf("LogFile previous: %v", err)
	}
	if data, err := os.ReadFile(prev); err != nil || !strings.Contains(string(data), "hogging") {
		t.Errorf("previous log %s = %q, %v; want the hog's output", prev, data, err)
	}
}

func TestRestartPolicyNever(t *testing.T) {
	b := newBed(t)
	pod := testPod("once", corev1.Container{Name: "main", Image: "test/exit"})
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	if ok, err := b.rt.Sync(context.Background(), pod, netip.MustParsePrefix("10.240.7.3/24"), b.gw); err != nil || !ok {
		t.Fatalf("Sync = %v, %v", ok, err)
	}
	st := b.waitState(t, pod.UID, "Failed phase", func(st PodState) bool { return st.Phase == corev1.PodFailed })
	term := st.Containers[0].State.Terminated
	if term == nil || term.ExitCode != 7 || term.Reason != "Error" || st.Containers[0].RestartCount != 0 {
		t.Errorf("container state %+v restarts %d, want terminated Error exit 7 without restart", st.Containers[0].State, st.Containers[0].RestartCount)
	}
}

func TestEnvVolumesProbes(t *testing.T) {
	cm := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"Corefile": ".:53 {}\n", "mode": "fast"}}
	b := newBed(t, cm)
	seen := map[string]map[string]string{}
	b.rt.opts.Resolver = Chain(func(context.Context, *corev1.Pod, *corev1.Container, map[string]string) (Command, bool, error) {
		return Command{}, false, nil
	}, testResolver(seen))
	probe := func(port int) *corev1.Probe {
		return &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1, ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}}
	}
	c := corev1.Container{
		Name: "web", Image: "test/serve", Args: []string{"--name=$(POD_NAME)", "$$(kept)"},
		Env: []corev1.EnvVar{
			{Name: "PORT", Value: "8080"},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "CONFIG", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "mode"}}},
		},
		VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns"}},
		ReadinessProbe: probe(8080),
	}
	bad := c.DeepCopy()
	bad.Name = "web-bad-probe"
	bad.Env[0].Value = "8081"
	bad.ReadinessProbe = probe(9999)
	pod := testPod("web", c, *bad)
	pod.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	if ok, err := b.rt.Sync(context.Background(), pod, netip.MustParsePrefix("10.240.7.4/24"), b.gw); err != nil || !ok {
		t.Fatalf("Sync = %v, %v", ok, err)
	}
	st := b.waitState(t, pod.UID, "web ready", func(st PodState) bool { return st.Containers[0].Ready })
	if st.Ready || st.Containers[1].Ready {
		t.Errorf("pod Ready=%v, bad container Ready=%v; want both false (its probe's port is closed)", st.Ready, st.Containers[1].Ready)
	}
	if st.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running", st.Phase)
	}
	host := seen["web"]["/etc/coredns"]
	if data, err := os.ReadFile(filepath.Join(host, "Corefile")); err != nil || string(data) != ".:53 {}\n" {
		t.Errorf("mount /etc/coredns -> %q: Corefile %q, %v", host, data, err)
	}
	logf, running, err := b.rt.LogFile(pod.UID, "web", false)
	if err != nil || !running {
		t.Fatalf("LogFile = %q %v %v", logf, running, err)
	}
	data, _ := os.ReadFile(logf)
	for _, want := range []string{"args -test.run=^$ --name=web $(kept)", "POD_IP=10.240.7.4", "POD_NAME=web", "CONFIG=fast"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("log %q lacks %q", data, want)
		}
	}
	// The pod really listens in its own namespace, at its IP.
	conn, err := b.net.DialContext(context.Background(), "tcp", "10.240.7.4:8080")
	if err != nil {
		t.Fatalf("dial the pod from the node network: %v", err)
	}
	conn.Close()

	if err := b.rt.Remove(context.Background(), pod.UID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, found := b.rt.State(pod.UID); found {
		t.Error("State still found after Remove")
	}
	for _, l := range b.net.Leftovers() {
		if strings.Contains(l, "-p") {
			t.Errorf("after Remove, %s is left", l)
		}
	}
}

func TestSimulatedWhenNotResolved(t *testing.T) {
	rt, err := New(Options{Resolver: testResolver(nil), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pod := testPod("nginx", corev1.Container{Name: "a", Image: "test/serve"}, corev1.Container{Name: "b", Image: "nginx"})
	ok, err := rt.Sync(context.Background(), pod, netip.MustParsePrefix("10.240.7.9/24"), netip.MustParseAddr("10.240.7.1"))
	if err != nil || ok {
		t.Fatalf("Sync of a pod with an unknown image = %v, %v; want simulated", ok, err)
	}
	if rt.Runs(pod.UID) {
		t.Error("Runs = true for a simulated pod")
	}
	if err := rt.RemoveKey(context.Background(), "ns/nginx"); err != nil || len(rt.simulated) != 0 {
		t.Errorf("RemoveKey of a simulated pod = %v, remembered %v; want it forgotten", err, rt.simulated)
	}
	if _, err := New(Options{Dir: t.TempDir()}); err == nil {
		t.Error("New without resolver: no error")
	}
}

func TestExpand(t *testing.T) {
	vals := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":      "plain",
		"$(A)":       "1",
		"x$(B)y$(A)": "xtwoy1",
		"$(C)":       "$(C)",
		"$$(A)":      "$(A)",
		"$(A":        "$(A",
		"cost $5":    "cost $5",
		"trailing $": "trailing $",
	} {
		if got := expand(in, vals); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComputeQOS(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	}
	for _, tc := range []struct {
		name string
		res  corev1.ResourceRequirements
		want corev1.PodQOSClass
	}{
		{"none", corev1.ResourceRequirements{}, corev1.PodQOSBestEffort},
		{"limits only", corev1.ResourceRequirements{Limits: rl("1", "1Gi")}, corev1.PodQOSGuaranteed},
		{"equal", corev1.ResourceRequirements{Limits: rl("1", "1Gi"), Requests: rl("1", "1Gi")}, corev1.PodQOSGuaranteed},
		{"lower request", corev1.ResourceRequirements{Limits: rl("1", "1Gi"), Requests: rl("500m", "1Gi")}, corev1.PodQOSBurstable},
		{"memory limit only", corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}, corev1.PodQOSBurstable},
	} {
		if got := ComputeQOS(testPod("p", corev1.Container{Resources: tc.res})); got != tc.want {
			t.Errorf("%s: ComputeQOS = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestCrashLoopBackOff: a container that keeps exiting is restarted at
// once the first time, then waits in CrashLoopBackOff with the back-off
// in its message.
func TestCrashLoopBackOff(t *testing.T) {
	b := newBed(t)
	b.rt.opts.BackOff = 2 * time.Second
	pod := testPod("crash", corev1.Container{Name: "main", Image: "test/exit"})
	if ok, err := b.rt.Sync(context.Background(), pod, netip.MustParsePrefix("10.240.7.5/24"), b.gw); err != nil || !ok {
		t.Fatalf("Sync = %v, %v", ok, err)
	}
	start := time.Now()
	st := b.waitState(t, pod.UID, "CrashLoopBackOff", func(st PodState) bool {
		w := st.Containers[0].State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff"
	})
	c := st.Containers[0]
	if c.RestartCount != 1 || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("CrashLoopBackOff after %s with %d restarts; want one immediate restart first", time.Since(start), c.RestartCount)
	}
	if !strings.Contains(c.State.Waiting.Message, "back-off 2s") || c.LastTerminationState.Terminated == nil || c.LastTerminationState.Terminated.ExitCode != 7 {
		t.Errorf("state %+v, last %+v", c.State.Waiting, c.LastTerminationState.Terminated)
	}
	if st.Phase != corev1.PodRunning || st.Ready {
		t.Errorf("phase %s ready %v, want Running and not ready", st.Phase, st.Ready)
	}
}
