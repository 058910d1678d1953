package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 1}) }

const node = "lab-node-1"

// testConfig is a kmsg monitor whose patterns only match lines carrying
// marker, so that the agent under test ignores other tests' kernel lines.
// Its structure is that of NPD's kernel-monitor.json plus kdiag's recovery
// extension.
func testConfig(marker string) string {
	return fmt.Sprintf(`{
  "plugin": "kmsg", "logPath": "/dev/kmsg", "lookback": "1m", "bufferSize": 10,
  "source": "test-kernel-monitor-%[1]s", "metricsReporting": true,
  "conditions": [
    {"type": "ReadonlyFilesystem", "reason": "FilesystemIsNotReadOnly", "message": "Filesystem is not read-only"},
    {"type": "KernelDeadlock", "reason": "KernelHasNoDeadlock", "message": "kernel has no deadlock"},
    {"type": "XfsShutdown", "reason": "XfsHasNotShutDown", "message": "XFS has not shut down"}
  ],
  "rules": [
    {"type": "temporary", "reason": "OOMKilling",
     "pattern": "Killed process \\d+ \\(%[1]s\\) total-vm:\\d+kB, anon-rss:\\d+kB, file-rss:\\d+kB.*"},
    {"type": "permanent", "condition": "ReadonlyFilesystem", "reason": "FilesystemIsReadOnly",
     "pattern": "EXT4-fs \\(%[1]s\\): Remounting filesystem read-only",
     "recovery": {"pattern": "EXT4-fs \\(%[1]s\\): re-mounted.* r/w", "reason": "FilesystemRemountedReadWrite"}},
    {"type": "permanent", "condition": "KernelDeadlock", "reason": "ContainerdHung",
     "pattern": "task %[1]s:\\d+ blocked for more than \\d+ seconds\\.",
     "recovery": {"after": "2s", "reason": "NoHungTaskSince2s"}},
    {"type": "permanent", "condition": "XfsShutdown", "reason": "XfsHasShutdown",
     "pattern": "XFS \\(%[1]s\\): .* Shutting down filesystem.?",
     "recovery": {"command": ["test", "-e", "%[2]s"], "interval": "1s", "reason": "HealthCheckPassed"}}
  ]
}`, marker, healthFile(marker))
}

// healthFile is the file whose existence the test config's XfsShutdown
// health check tests.
func healthFile(marker string) string {
	return filepath.Join(os.TempDir(), "kdiag-agent-test-"+marker+"-ok")
}

// kmsg writes one kernel-log line at priority 3 (error), as a driver would.
func kmsg(t testing.TB, line string) {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("write /dev/kmsg (the test needs root): %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString("<3>" + line + "\n"); err != nil {
		t.Fatalf("write /dev/kmsg: %v", err)
	}
}

// startAgent runs an agent until the test ends or stop is called.
func startAgent(t testing.TB, cfg *rest.Config, opts Options) (a *Agent, stop func()) {
	t.Helper()
	opts.Node, opts.RESTConfig, opts.Listen = node, cfg, "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Hour
	}
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	}
	t.Cleanup(stop)
	waitUntil(t, 10*time.Second, "agent /healthz 200", func() (bool, error) {
		code, _ := get(a.Addr(), "/healthz")
		return code == http.StatusOK, nil
	})
	return a, stop
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitUntil(t testing.TB, within time.Duration, what string, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < within {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last error: %v)", what, within, last)
	return 0
}

func nodeCondition(ctx context.Context, cs kubernetes.Interface, typ string) (corev1.NodeCondition, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return corev1.NodeCondition{}, err
	}
	for _, c := range n.Status.Conditions {
		if string(c.Type) == typ {
			return c, nil
		}
	}
	return corev1.NodeCondition{}, fmt.Errorf("no condition %s", typ)
}

func hasEvent(ctx context.Context, cs kubernetes.Interface, ns, kind, name, reason, contains string) (bool, error) {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name, "reason": reason}.AsSelector().String()
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return false, err
	}
	for _, e := range evs.Items {
		if strings.Contains(e.Message, contains) {
			return true, nil
		}
	}
	return false, fmt.Errorf("%d %s events on %s %s, none containing %q", len(evs.Items), reason, kind, name, contains)
}

func writeConfig(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKernelLinesBecomeEventsAndConditionsThatClear(t *testing.T) {
	c := labtest.Cluster(t)
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ctx := context.Background()
	marker := fmt.Sprintf("kd%06d", rand.IntN(1000000))
	dir := t.TempDir()
	files := []string{
		writeConfig(t, dir, "test.json", testConfig(marker)),
		writeConfig(t, dir, "broken.json", `{"plugin": "kmsg", "source": `),
		writeConfig(t, dir, "fake-kmsg.json", `{"plugin":"kmsg","logPath":"`+filepath.Join(dir, "no-such-kmsg")+`","source":"fake-kmsg","rules":[]}`),
	}

	// A pod on the node, with a memory limit, whose container the OOM line names.
	ns := "agent-" + marker
	labtest.CreateNamespace(t, ctx, cs, ns)
	spec := labtest.PauseSpec()
	spec.NodeName = node
	spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
	labtest.CreatePod(t, ctx, cs, ns, "hog", nil, spec, false)
	var pod *corev1.Pod
	waitUntil(t, labtest.WaitTimeout, "pod running with a container ID", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "hog", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].ContainerID != "", nil
	})
	cid := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")

	a, _ := startAgent(t, c.RESTConfig(), Options{ConfigFiles: files, PSI: psiMissing(dir)})

	t.Run("bad inputs are reported and the rest runs", func(t *testing.T) {
		waitUntil(t, 5*time.Second, "three problems", func() (bool, error) { return len(a.Problems()) >= 3, nil })
		all := strings.Join(a.Problems(), "\n")
		for _, want := range []string{"broken.json: decode JSON", "open kernel log", "pressure stall information unavailable"} {
			if !strings.Contains(all, want) {
				t.Errorf("problems lack %q:\n%s", want, all)
			}
		}
		_, body := get(a.Addr(), "/healthz")
		if !strings.Contains(body, "broken.json") {
			t.Errorf("/healthz does not list the problems:\n%s", body)
		}
	})

	t.Run("OOM kill: Event on the pod naming container, limit and usage, and on the node", func(t *testing.T) {
		memcg := "/kubepods/burstable/pod" + string(pod.UID) + "/" + cid
		pid := 40000 + rand.IntN(20000)
		kmsg(t, fmt.Sprintf("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=%s,task_memcg=%s,task=%s,pid=%d,uid=0", memcg, memcg, marker, pid))
		kmsg(t, fmt.Sprintf("Memory cgroup out of memory: Killed process %d (%s) total-vm:1048576kB, anon-rss:262144kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:600kB oom_score_adj:984", pid, marker))
		d := waitUntil(t, 2*time.Second, "OOMKilling event on the pod", func() (bool, error) {
			return hasEvent(ctx, cs, ns, "Pod", "hog", "OOMKilling", "Container app was OOM-killed: process "+marker+fmt.Sprintf(" (pid %d) used 256Mi of its memory limit 256Mi", pid))
		})
		t.Logf("pod event after %s", d)
		waitUntil(t, 2*time.Second, "OOMKilling event on the node", func() (bool, error) {
			return hasEvent(ctx, cs, "default", "Node", node, "OOMKilling", "("+marker+")")
		})
		_, body := get(a.Addr(), "/metrics")
		if !strings.Contains(body, `problem_counter{reason="OOMKilling"}`) {
			t.Errorf("/metrics lacks problem_counter for OOMKilling")
		}
	})

	t.Run("read-only remount sets the condition and the recovery line clears it", func(t *testing.T) {
		kmsg(t, "EXT4-fs ("+marker+"): Remounting filesystem read-only")
		d := waitUntil(t, 2*time.Second, "ReadonlyFilesystem True", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
			return c.Status == corev1.ConditionTrue && c.Reason == "FilesystemIsReadOnly", err
		})
		t.Logf("condition after %s", d)
		waitUntil(t, 2*time.Second, "FilesystemIsReadOnly event on the node", func() (bool, error) {
			return hasEvent(ctx, cs, "default", "Node", node, "FilesystemIsReadOnly", marker)
		})
		if _, err := nodeCondition(ctx, cs, "Ready"); err != nil {
			t.Errorf("the kubelet's Ready condition is gone after our patch: %v", err)
		}
		kmsg(t, "EXT4-fs ("+marker+"): re-mounted 0ad2f1c3-2b8e-4ef5-9d5c-7b1e0f9a6c42 r/w. Quota mode: none.")
		waitUntil(t, 2*time.Second, "ReadonlyFilesystem back to False", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
			return c.Status == corev1.ConditionFalse && c.Reason == "FilesystemRemountedReadWrite", err
		})
	})

	t.Run("XFS shutdown sets XfsShutdown; a passing health check clears it", func(t *testing.T) {
		kmsg(t, "XFS ("+marker+"): Corruption of in-memory data detected.  Shutting down filesystem")
		waitUntil(t, 2*time.Second, "XfsShutdown True", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "XfsShutdown")
			return c.Status == corev1.ConditionTrue && c.Reason == "XfsHasShutdown", err
		})
		time.Sleep(1500 * time.Millisecond) // at least one failing check
		if c, err := nodeCondition(ctx, cs, "XfsShutdown"); err != nil || c.Status != corev1.ConditionTrue {
			t.Fatalf("a failing health check cleared the condition: %+v, %v", c, err)
		}
		f := healthFile(marker)
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(f) })
		waitUntil(t, 4*time.Second, "XfsShutdown cleared by the health check", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "XfsShutdown")
			return c.Status == corev1.ConditionFalse && c.Reason == "HealthCheckPassed", err
		})
	})

	t.Run("hung task sets KernelDeadlock, which expires", func(t *testing.T) {
		kmsg(t, "INFO: task "+marker+":4242 blocked for more than 120 seconds.")
		waitUntil(t, 2*time.Second, "KernelDeadlock True", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "KernelDeadlock")
			return c.Status == corev1.ConditionTrue && c.Reason == "ContainerdHung", err
		})
		waitUntil(t, 5*time.Second, "KernelDeadlock expired", func() (bool, error) {
			c, err := nodeCondition(ctx, cs, "KernelDeadlock")
			return c.Status == corev1.ConditionFalse && c.Reason == "NoHungTaskSince2s", err
		})
	})
}

func psiMissing(dir string) (o psi.Options) {
	o.ProcDir = filepath.Join(dir, "no-proc-pressure")
	return o
}

func TestRestartResumesConditions(t *testing.T) {
	c := labtest.Cluster(t)
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ctx := context.Background()
	marker := fmt.Sprintf("kr%06d", rand.IntN(1000000))
	dir := t.TempDir()
	files := []string{writeConfig(t, dir, "test.json", testConfig(marker))}
	opts := Options{ConfigFiles: files, DisablePSI: true}

	_, stop1 := startAgent(t, c.RESTConfig(), opts)
	kmsg(t, "EXT4-fs ("+marker+"): Remounting filesystem read-only")
	waitUntil(t, 2*time.Second, "ReadonlyFilesystem True", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
		return c.Status == corev1.ConditionTrue, err
	})
	before, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
	if err != nil {
		t.Fatal(err)
	}
	stop1()

	// The second agent's lookback does not see the line (another source
	// name is irrelevant: conditions are per node), and the marker keeps it
	// from matching anything else: only resuming can keep the condition.
	opts.ConfigFiles = []string{writeConfig(t, dir, "other.json", strings.ReplaceAll(testConfig(marker+"x"), `"lookback": "1m"`, `"lookback": "0"`))}
	a2, _ := startAgent(t, c.RESTConfig(), opts)
	waitUntil(t, 5*time.Second, "the restarted agent's first patch", func() (bool, error) { return a2.Patches() >= 1, nil })
	after, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != corev1.ConditionTrue || after.Reason != before.Reason || !after.LastTransitionTime.Equal(&before.LastTransitionTime) {
		t.Errorf("restart flipped the condition: before %+v, after %+v", before, after)
	}
	if !after.LastHeartbeatTime.After(before.LastHeartbeatTime.Time) && !after.LastHeartbeatTime.Equal(&before.LastHeartbeatTime) {
		t.Errorf("heartbeat went backwards: %v -> %v", before.LastHeartbeatTime, after.LastHeartbeatTime)
	}
	// The resumed condition still clears by its rule's recovery pattern.
	kmsg(t, "EXT4-fs ("+marker+"x): re-mounted r/w")
	waitUntil(t, 2*time.Second, "the resumed condition cleared by its recovery line", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
		return c.Status == corev1.ConditionFalse, err
	})
}
