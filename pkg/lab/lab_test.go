package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

func TestMain(m *testing.M) {
	// No simulated nodes: these tests check what the control plane does on
	// its own and create the Nodes they need by hand.
	labtest.Main(m, labtest.Options{})
}

// processesIn lists live processes whose working directory is dir. Every
// lab process runs in its lab directory, so after a stop this must be empty.
func processesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", pid, "cwd"))
		if err != nil || cwd != dir {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if len(cmdline) == 0 {
			// Killed and exiting: its memory (and so its command line) is
			// already released, it is just not a zombie yet.
			continue
		}
		out = append(out, pid+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}

func poll(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestControllersAndSchedulerWork drives the real controllers: a Deployment
// gets a ReplicaSet and Pods from kube-controller-manager; without nodes
// kube-scheduler reports FailedScheduling; once a Node exists (and gets a
// podCIDR from the node IPAM controller) the Pods are bound to it.
func TestControllersAndSchedulerWork(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())

	ns := "lab-it-controllers"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Deployment right after its namespace: %v", err)
	}

	poll(t, "a ReplicaSet owned by the Deployment", 30*time.Second, func(ctx context.Context) (bool, error) {
		rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, rs := range rss.Items {
			if ref := metav1.GetControllerOf(&rs); ref != nil && ref.Kind == "Deployment" && ref.Name == "web" {
				return true, nil
			}
		}
		return false, nil
	})
	var pods []corev1.Pod
	poll(t, "2 Pods created by the ReplicaSet", 30*time.Second, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods = list.Items
		return len(pods) == 2, nil
	})
	poll(t, "a FailedScheduling event (no nodes yet)", 30*time.Second, func(ctx context.Context) (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
		if err != nil {
			return false, err
		}
		return len(evs.Items) > 0, nil
	})

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-it-node", Labels: map[string]string{"kubernetes.io/hostname": "lab-it-node"}}}
	node, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{}) })
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	poll(t, "both Pods bound to lab-it-node", 60*time.Second, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		bound := 0
		for _, p := range list.Items {
			if p.Spec.NodeName == "lab-it-node" {
				bound++
			}
		}
		return bound == 2, nil
	})
	_, cluster, _ := net.ParseCIDR(lab.ClusterCIDR)
	poll(t, "a podCIDR from the node IPAM controller", 30*time.Second, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil || n.Spec.PodCIDR == "" {
			return false, err
		}
		ip, _, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil || !cluster.Contains(ip) {
			return false, fmt.Errorf("podCIDR %q is not inside %s", n.Spec.PodCIDR, lab.ClusterCIDR)
		}
		return true, nil
	})
}

// TestClientCertificates checks the identities ClientCertConfig mints: an
// unbound user is Forbidden until RBAC allows it, groups come from the
// certificate, and an expired certificate is Unauthorized.
func TestClientCertificates(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.RESTConfig())
	hour := time.Now().Add(time.Hour)

	janeCfg, err := c.ClientCertConfig("jane", []string{"devs"}, hour)
	if err != nil {
		t.Fatal(err)
	}
	jane := kubernetes.NewForConfigOrDie(janeCfg)
	if _, err := jane.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("unbound user listing pods: error = %v, want Forbidden", err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: "default"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}
	if _, err := admin.RbacV1().Roles("default").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().Roles("default").Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "devs-read-pods", Namespace: "default"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "devs"}},
	}
	if _, err := admin.RbacV1().RoleBindings("default").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().RoleBindings("default").Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
	})
	poll(t, "the group binding to take effect", 10*time.Second, func(ctx context.Context) (bool, error) {
		_, err := jane.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if _, err := jane.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing nodes outside the binding: error = %v, want Forbidden", err)
	}

	expiredCfg, err := c.ClientCertConfig("old-admin", []string{"system:masters"}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kubernetes.NewForConfigOrDie(expiredCfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Fatalf("expired certificate: error = %v, want Unauthorized", err)
	}

	// The admin kubeconfig file on disk works on its own (embedded data).
	fileCfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(fileCfg).CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("admin kubeconfig %s: %v", c.KubeconfigPath(), err)
	}
}

// TestTwoLabsThenStopLeavesNothing runs two more labs at once next to the
// shared one, checks that they are independent and that a third start in
// a running lab's directory is refused, then stops them and checks that no
// process is left.
func TestTwoLabsThenStopLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against a real control plane; skipped with -short")
	}
	labtest.Cluster(t) // ensure the binaries exist before timing starts
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir()}
	clusters := make([]*lab.Cluster, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[i], errs[i] = lab.Start(ctx, lab.Options{Dir: dirs[i]})
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clusters {
			if c != nil {
				_ = c.Stop(context.Background())
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("lab %d in %s: %v", i, dirs[i], err)
		}
	}
	a, b := clusters[0], clusters[1]
	if a.Server() == b.Server() {
		t.Fatalf("both labs serve on %s", a.Server())
	}
	csA := kubernetes.NewForConfigOrDie(a.RESTConfig())
	csB := kubernetes.NewForConfigOrDie(b.RESTConfig())
	if _, err := csA.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := csB.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace created in lab A seen in lab B: error = %v", err)
	}

	_, err := lab.Start(ctx, lab.Options{Dir: dirs[0]})
	if !errors.Is(err, lab.ErrRunning) || !strings.Contains(err.Error(), "kdiag lab down --dir "+dirs[0]) || !strings.Contains(err.Error(), "kube-apiserver (pid") {
		t.Fatalf("start in a running lab's directory: error = %v, want ErrRunning naming the processes and the way out", err)
	}
	if _, err := csA.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); err != nil {
		t.Fatalf("the refused start disturbed the running lab: %v", err)
	}

	procsA := a.Processes()
	if len(procsA) != 4 {
		t.Fatalf("lab A runs %d processes, want 4: %+v", len(procsA), procsA)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range procsA {
		if process.Alive(r) {
			t.Errorf("%s (pid %d) alive after Stop", r.Name, r.PID)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.PID)); err == nil {
			if st, err := process.ReadStat(r.PID); err == nil && st.StartTicks == r.StartTicks {
				t.Errorf("%s (pid %d) not reaped after Stop (state %c)", r.Name, r.PID, st.State)
			}
		}
	}
	if left := processesIn(t, dirs[0]); len(left) > 0 {
		t.Errorf("processes left in %s after Stop: %v", dirs[0], left)
	}
	if _, err := lab.ReadState(dirs[0]); !errors.Is(err, lab.ErrNoLab) {
		t.Errorf("state after Stop: error = %v, want ErrNoLab", err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := lab.Down(ctx, dirs[0]); err != nil {
		t.Errorf("Down after Stop: %v", err)
	}
	if _, err := csB.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("stopping lab A broke lab B: %v", err)
	}
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if left := processesIn(t, dirs[1]); len(left) > 0 {
		t.Errorf("processes left in %s after Stop: %v", dirs[1], left)
	}
}

// TestDetachedLabAndDown starts a lab as `kdiag lab up` does: detached,
// with an extra process, and stops it by directory with Down.
func TestDetachedLabAndDown(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against a real control plane; skipped with -short")
	}
	labtest.Cluster(t)
	ctx := context.Background()
	dir := t.TempDir()
	c, err := lab.Start(ctx, lab.Options{
		Dir:      dir,
		Detached: true,
		Extra:    []lab.Command{{Name: "sidecar", Path: "/bin/sleep", Args: []string{"600"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Down(context.Background(), dir) })

	st, err := lab.ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running() || len(st.Processes) != 5 || st.Processes[4].Name != "sidecar" {
		t.Fatalf("status = %+v, want 5 running processes ending with sidecar", st)
	}
	for _, p := range st.Processes {
		s, err := process.ReadStat(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Session != p.PID {
			t.Errorf("%s (pid %d) is not a session leader (session %d): it would die with the CLI's terminal", p.Name, p.PID, s.Session)
		}
	}
	opened, err := lab.Open(dir)
	if err != nil {
		t.Fatalf("Open a running lab: %v", err)
	}
	if opened.Server() != c.Server() {
		t.Errorf("Open: server %s, want %s", opened.Server(), c.Server())
	}
	if _, err := kubernetes.NewForConfigOrDie(opened.RESTConfig()).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("client of an opened lab: %v", err)
	}

	if err := lab.Down(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Processes {
		if process.Alive(p.Record) {
			t.Errorf("%s (pid %d) alive after Down", p.Name, p.PID)
		}
	}
	if left := processesIn(t, dir); len(left) > 0 {
		t.Errorf("processes left after Down: %v", left)
	}
	if err := lab.Down(ctx, dir); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if _, err := lab.ReadStatus(dir); !errors.Is(err, lab.ErrNoLab) {
		t.Errorf("status after Down: error = %v, want ErrNoLab", err)
	}
	if _, err := lab.Open(dir); err == nil {
		t.Error("Open after Down succeeded")
	}
}

// fakeBinDir returns a binary directory with the real binaries except the
// named ones, which are replaced by a script printing msg and exiting 1.
func fakeBinDir(t *testing.T, msg string, broken ...string) string {
	t.Helper()
	real, err := binaries.Ensure(context.Background(), binaries.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range binaries.Names() {
		if contains(broken, n) {
			script := fmt.Sprintf("#!/bin/sh\necho %q >&2\nexit 1\n", msg)
			if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.Symlink(real.Path(n), filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestStartFailuresCleanUp covers a component that dies during start-up
// and a port collision that persists: both give a one-line error naming
// the component and its log, and leave no process behind.
func TestStartFailuresCleanUp(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against a real control plane; skipped with -short")
	}
	labtest.Cluster(t)
	tests := []struct {
		name      string
		msg       string
		want      []string
		retries   int
		portInUse bool
	}{
		{
			name: "apiserver dies",
			msg:  "Error: unknown flag: --bogus",
			want: []string{"kube-apiserver", "exited", "unknown flag: --bogus", "logs/kube-apiserver.log"},
		},
		{
			name:    "port collision every time",
			msg:     "failed to listen on 127.0.0.1:6443: listen tcp 127.0.0.1:6443: bind: address already in use",
			want:    []string{"port already in use", "kube-apiserver", "exited", "logs/kube-apiserver.log"},
			retries: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			binDir := fakeBinDir(t, tc.msg, binaries.APIServer)
			// Outside the checkout the tools module is not found, so the
			// fake set is used as it is instead of being rebuilt.
			t.Chdir(t.TempDir())
			var progress strings.Builder
			_, err := lab.Start(context.Background(), lab.Options{
				Dir:      dir,
				Binaries: binaries.Options{BinDir: binDir},
				Progress: &progress,
			})
			if err == nil {
				t.Fatal("Start succeeded with a broken kube-apiserver")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if n := strings.Count(progress.String(), "retrying with other ports"); n != tc.retries {
				t.Errorf("%d retries, want %d; progress:\n%s", n, tc.retries, progress.String())
			}
			if left := processesIn(t, dir); len(left) > 0 {
				t.Errorf("processes left after a failed start: %v", left)
			}
			if _, err := lab.ReadState(dir); !errors.Is(err, lab.ErrNoLab) {
				t.Errorf("state after a failed start: error = %v, want ErrNoLab", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "logs", "etcd.log")); err != nil {
				t.Errorf("logs of the failed start not kept: %v", err)
			}
		})
	}
}

// BenchmarkStartStop measures a lab's start-up until every component is
// ready (and its stop), with the binaries cached. Run it with a small
// -benchtime such as 3x.
func BenchmarkStartStop(b *testing.B) {
	labtest.Cluster(b) // build the binaries outside the measurement if needed
	ctx := context.Background()
	var stop time.Duration
	for b.Loop() {
		c, err := lab.Start(ctx, lab.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := c.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(t0)
	}
	b.ReportMetric(stop.Seconds()/float64(b.N), "stop-s/op")
}
