package realpods_test

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/cgroups"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

// TestSecondLabThenKillAndDown runs a second lab in real mode next to the
// shared one, with the same pod and Service ranges: a pod in each answers
// on its own node network only. Then every process of the second lab gets
// SIGKILL while its pod still runs, and `lab down` removes everything it
// made: processes, namespaces, the host link, cgroups. The shared lab
// keeps working.
func TestSecondLabThenKillAndDown(t *testing.T) {
	a, csA, ns := setup(t)
	ctx := context.Background()

	b := labtest.NewCluster(t, lab.Options{Pods: lab.PodsReal})
	db := b.DataPlane()
	if db == nil {
		t.Fatal("second lab has no data plane")
	}
	if db.Network.Netns == a.DataPlane().Network.Netns || db.Network.HostAddr == a.DataPlane().Network.HostAddr {
		t.Fatalf("the labs share names or addresses: %+v and %+v", db.Network, a.DataPlane().Network)
	}
	kctx, stopKubelet := context.WithCancel(ctx)
	kdone := make(chan error, 1)
	go func() {
		kdone <- kubelet.Run(kctx, b.RESTConfig(), kubelet.Options{Nodes: 1, Real: &kubelet.RealPods{Dir: b.Dir(), Resolver: resolve}})
	}()
	t.Cleanup(func() {
		stopKubelet()
		select {
		case <-kdone:
		default:
		}
	})
	if err := lab.WaitForNodes(ctx, b.RESTConfig(), 1, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	csB := kubernetes.NewForConfigOrDie(b.RESTConfig())
	labtest.CreateNamespace(t, ctx, csB, ns)

	labtest.CreatePod(t, ctx, csA, ns, "in-a", nil, serverSpec(8080, nil), false)
	labtest.CreatePod(t, ctx, csB, ns, "in-b", nil, serverSpec(8080, nil), false)
	podA := waitPod(t, csA, ns, "in-a", "Running", labtest.PodRunning)
	podB := waitPod(t, csB, ns, "in-b", "Running", labtest.PodRunning)
	t.Logf("pod IPs: lab A %s, lab B %s", podA.Status.PodIP, podB.Status.PodIP)
	for _, tc := range []struct {
		c    *lab.Cluster
		ip   string
		want string
	}{{a, podA.Status.PodIP, "in-a"}, {b, podB.Status.PodIP, "in-b"}} {
		var body string
		labtest.WaitFor(t, ctx, "GET "+tc.want+" from its node network", func(ctx context.Context) (bool, error) {
			var err error
			body, err = get(ctx, tc.c.DataPlane().Network.NetnsPath(), "http://"+tc.ip+":8080/")
			return err == nil, nil
		})
		if !strings.Contains(body, tc.want) {
			t.Errorf("node network %s: answer %q, want one from %s", tc.c.DataPlane().Network.Netns, body, tc.want)
		}
	}

	// A container process that outlives its kubelet (as one that
	// daemonized would): started detached, in the lab's cgroups and in a
	// pod namespace of its own.
	stray := startStray(t, db)

	// kill -9 of every lab process. The in-process kubelet stands for the
	// killed kubelet: it stops now, before its API server's address
	// vanishes with the node network.
	for _, r := range b.Processes() {
		if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("kill %s: %v", r.Name, err)
		}
	}
	t0 := time.Now()
	stopKubelet()
	<-kdone
	t.Logf("the second lab's kubelet stopped in %s", time.Since(t0).Round(time.Millisecond))
	if !process.Alive(stray) {
		t.Fatal("the stray container process died before lab down")
	}
	t0 = time.Now()
	if err := lab.Down(ctx, b.Dir()); err != nil {
		t.Fatalf("lab down after kill -9: %v", err)
	}
	t.Logf("lab down took %s", time.Since(t0).Round(time.Millisecond))
	if left := db.Leftovers(); len(left) > 0 {
		t.Errorf("left after lab down: %v", left)
	}
	if process.Alive(stray) {
		t.Errorf("stray container process %d still runs after lab down", stray.PID)
	}

	// The shared lab is untouched.
	if _, err := get(ctx, a.DataPlane().Network.NetnsPath(), "http://"+podA.Status.PodIP+":8080/"); err != nil {
		t.Errorf("shared lab's pod after the second lab went down: %v", err)
	}
	if _, err := csA.CoreV1().Pods(ns).Get(ctx, "in-a", metav1.GetOptions{}); err != nil {
		t.Errorf("shared lab API: %v", err)
	}
}

// startStray starts `sleep` detached in a pod namespace and a container
// cgroup of the lab's data plane.
func startStray(t *testing.T, d *lab.DataPlane) process.Record {
	t.Helper()
	ctx := context.Background()
	pn, err := d.Network.AddPod(ctx, "stray", netip.MustParsePrefix("10.240.0.200/24"), netip.MustParseAddr("10.240.0.1"))
	if err != nil {
		t.Fatalf("stray pod network: %v", err)
	}
	g, err := d.Cgroups.Create(d.CgroupParent, cgroups.ContainerPath(corev1.PodQOSBestEffort, "00000000-0000-0000-0000-000000000001", "stray"), 0)
	if err != nil {
		t.Fatalf("stray cgroup: %v", err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	p, err := process.Start(process.Spec{
		Name: "stray", Path: sleep, Args: []string{"600"}, LogFile: t.TempDir() + "/stray.log", Detached: true,
		Netns: pn.NetnsPath(), Cgroups: g.Dirs(), Cgroup2: d.Cgroups.V2,
	})
	if err != nil {
		t.Fatalf("start stray process: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(p.PID, syscall.SIGKILL) })
	return p.Record
}
