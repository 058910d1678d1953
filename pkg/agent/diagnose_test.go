package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose/diagnosetest"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

// quickDiagnose returns diagnostic options that keep tests fast and local:
// a short CPU window and probe timeout, no kubelet healthz, a DNS server
// that refuses at once, and stand-ins for the kubelet (this test process)
// and the runtime (the lab's kube-apiserver), so that the verdict does not
// blame a kubelet this machine does not run.
func quickDiagnose() diagnose.Options {
	comm, _ := os.ReadFile("/proc/self/comm")
	return diagnose.Options{CPUWindow: 100 * time.Millisecond, ProbeTimeout: time.Second, DNSServer: "127.0.0.1:1",
		KubeletProcesses: []string{strings.TrimSpace(string(comm))}, RuntimeProcesses: []string{"kube-apiserver"}}
}

// deleteReport removes the lab node's stored report, now and after the test.
func deleteReport(t testing.TB, cs kubernetes.Interface) {
	t.Helper()
	del := func() {
		err := cs.CoreV1().ConfigMaps(diagnose.Namespace).Delete(context.Background(), diagnose.ConfigMapName(node), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete the node report: %v", err)
		}
	}
	del()
	t.Cleanup(del)
}

// podCgroups creates, for pod uid, a cgroup v2 directory (CPU) and a cgroup
// v1 memory directory under private test roots, as this hybrid host's
// kubelet would, and runs a busy shell in both. It returns the two roots.
func podCgroups(t *testing.T, uid string) (v2Root, memRoot string) {
	t.Helper()
	const v2Base, memBase = "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"
	for _, b := range []string{v2Base, memBase} {
		if _, err := os.Stat(b); err != nil || os.Geteuid() != 0 {
			t.Skipf("needs root and the hybrid cgroup mounts %s and %s (CI runs it as root): %v", v2Base, memBase, err)
		}
	}
	name := fmt.Sprintf("kdiag-test-%06d", rand.IntN(1000000))
	v2Root, memRoot = filepath.Join(v2Base, name), filepath.Join(memBase, name)
	rel := filepath.Join("kubepods", "burstable", "pod"+uid)
	var dirs []string
	for _, root := range []string{v2Root, memRoot} {
		for _, d := range []string{root, filepath.Join(root, "kubepods"), filepath.Join(root, "kubepods", "burstable"), filepath.Join(root, rel)} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatalf("create cgroup %s: %v", d, err)
			}
			dirs = append(dirs, d)
		}
	}
	// The shell waits until it is in the cgroups before it allocates: cgroup
	// v1 charges memory to the cgroup a page was allocated in.
	cmd := exec.Command("sh", "-c", "sleep 0.3; x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil {
				t.Errorf("remove cgroup %s: %v", dirs[i], err)
			}
		}
	})
	for _, root := range []string{v2Root, memRoot} {
		if err := os.WriteFile(filepath.Join(root, rel, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatalf("move the busy shell into %s: %v", root, err)
		}
	}
	usage := filepath.Join(memRoot, rel, "memory.usage_in_bytes")
	waitUntil(t, 10*time.Second, "the busy shell's memory charged to its cgroup", func() (bool, error) {
		b, err := os.ReadFile(usage)
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n > 4<<20, err
	})
	return v2Root, memRoot
}

// TestNodeDiagnoseThroughPodProxy runs the agent for the lab node with a
// pod whose cgroups hold a busy process, asks it for the NotReady
// diagnostic through the API server's pod proxy as kdiag node diagnose
// does, and checks that every section is filled. It then turns the node's
// Ready condition False, waits for the report the agent stores by itself,
// stops the agent and checks that the stored report is the fallback.
func TestNodeDiagnoseThroughPodProxy(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	deleteReport(t, cs)

	ns := fmt.Sprintf("diag-%06d", rand.IntN(1000000))
	labtest.CreateNamespace(t, ctx, cs, ns)
	spec := labtest.PauseSpec()
	spec.NodeName = node
	pod := labtest.CreatePod(t, ctx, cs, ns, "hog", nil, spec, false)
	v2Root, memRoot := podCgroups(t, string(pod.UID))

	healthz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer healthz.Close()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	diskDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(diskDir, "blob"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{Node: node, RESTConfig: c.RESTConfig(), Heartbeat: time.Hour, DisablePSI: false,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Disk:   disk.Options{Paths: []string{diskDir}},
		Diagnose: diagnose.Options{
			CgroupV2Roots: []string{v2Root}, MemoryV1Root: memRoot, CPUAcctV1Root: "/nonexistent",
			CPUWindow: 500 * time.Millisecond, ProbeTimeout: 2 * time.Second, DNSServer: diagnosetest.ClusterDNS(t, "10.0.0.1"),
			// Stand-ins: this test binary for the kubelet, the lab's
			// kube-apiserver process for the container runtime.
			KubeletHealthz: healthz.URL, KubeletProcesses: []string{strings.TrimSpace(string(comm))},
			RuntimeName: "kube-apiserver", RuntimeProcesses: []string{"kube-apiserver"},
		},
		ReportInterval: time.Hour,
	}
	var reported *diagnose.Report
	t.Run("fresh report through the pod proxy", func(t *testing.T) {
		la := labtest.StartAgent(t, c, labtest.AgentOptions{Node: node, Run: func(ctx context.Context, listen string) error {
			o := opts
			o.Listen = listen
			a, err := New(o)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		}})
		var got *diagnose.Fetched
		labtest.WaitFor(t, ctx, "a report from the agent through pods/proxy", func(ctx context.Context) (bool, error) {
			got, err = diagnose.Fetch(ctx, cs, node, diagnose.FetchOptions{})
			return err == nil, err
		})
		r := got.Report
		if got.Stored || got.Note != "" || r.Trigger != "request" {
			t.Errorf("fetched: stored=%v note=%q trigger=%q, want a fresh report", got.Stored, got.Note, r.Trigger)
		}
		p := r.Pressure
		if len(p.PSI) != 3 || p.CgroupVersion != "hybrid" || p.Pods != 1 || len(p.Errors) != 0 {
			t.Errorf("pressure: %d PSI resources, cgroup %q, %d pods, errors %v; want 3, hybrid, 1, none", len(p.PSI), p.CgroupVersion, p.Pods, p.Errors)
		}
		if len(p.TopCPU) != 1 || p.TopCPU[0].Name != "hog" || p.TopCPU[0].Namespace != ns || p.TopCPU[0].CPUCores < 0.05 {
			t.Errorf("top CPU = %+v, want %s/hog (the busy shell) using CPU", p.TopCPU, ns)
		}
		if len(p.TopMemory) != 1 || p.TopMemory[0].UID != string(pod.UID) || p.TopMemory[0].MemoryBytes < 1<<20 {
			t.Errorf("top memory = %+v, want pod %s with its working set", p.TopMemory, pod.UID)
		}
		if d := r.Disk; len(d.Filesystems) != 1 || len(d.Scans) != 1 || len(d.Scans[0].Top) == 0 || d.Scans[0].Top[0].Bytes < 1<<20 {
			t.Errorf("disk = %+v, want the temp dir's filesystem and its top consumers", d)
		}
		n := r.Network
		if len(n.DefaultRoutes) == 0 {
			t.Logf("no default route on this machine: %v", n.Errors)
		}
		if n.APIServer == nil || !n.APIServer.OK {
			t.Errorf("API server probe = %+v, want ok (the lab's API server)", n.APIServer)
		}
		if n.DNS == nil || !n.DNS.OK || n.DNS.Detail != "10.0.0.1" {
			t.Errorf("DNS probe = %+v, want kubernetes.default -> 10.0.0.1", n.DNS)
		}
		h := r.Health
		if len(h.Kubelet.Processes) == 0 || h.Kubelet.Healthz == nil || !h.Kubelet.Healthz.OK || len(h.Runtime.Processes) == 0 || len(h.Errors) != 0 {
			t.Errorf("health = %+v, want the stand-in processes found and healthz ok", h)
		}
		if r.Verdict.Culprit == "" || r.Verdict.Summary == "" || r.Verdict.Rule == "" {
			t.Errorf("verdict = %+v, want culprit, rule and summary", r.Verdict)
		}
		t.Logf("verdict: %s", r.Verdict.Summary)

		text, err := agentclient.New(cs, agentclient.Options{}).Get(ctx, agentclient.Agent{Node: node, Pod: la.Pod, Port: int(la.Addr.Port())},
			"/diagnose", map[string][]string{"format": {"text"}})
		if err != nil || !strings.Contains(string(text), "VERDICT") || !strings.Contains(string(text), ns+"/hog") {
			t.Errorf("GET /diagnose?format=text through the proxy: %v\n%s", err, text)
		}

		// The node turns NotReady: the agent records a report by itself.
		labtest.TakeStatus(t, ctx, cs.CoreV1().Nodes().Patch, node)
		setReady := func(status corev1.ConditionStatus, reason string) {
			patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":%q,"reason":%q,"message":"test","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
				status, reason, time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
			if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
				t.Fatalf("set Ready=%s: %v", status, err)
			}
		}
		t.Cleanup(func() {
			setReady(corev1.ConditionTrue, "KubeletReady")
			labtest.PatchNode(t, context.Background(), cs, node, `{"metadata":{"annotations":{"lab.kdiag.io/manual-status":null}}}`)
		})
		setReady(corev1.ConditionFalse, "KubeletNotReady")
		labtest.WaitFor(t, ctx, "the report stored when Ready turned False", func(ctx context.Context) (bool, error) {
			r, err := diagnose.Load(ctx, cs, node)
			if err != nil {
				t.Logf("no report yet: %v", err)
				return false, nil
			}
			reported = r
			if !strings.Contains(r.Trigger, "Ready is not True (KubeletNotReady)") {
				t.Logf("stored report's trigger: %s", r.Trigger)
				return false, nil
			}
			return true, nil
		})
	})
	if reported == nil {
		t.FailNow()
	}

	// The agent has stopped and its pod is gone: node diagnose falls back
	// to the stored report and says so.
	got, err := diagnose.Fetch(ctx, cs, node, diagnose.FetchOptions{})
	if err != nil {
		t.Fatalf("fetch without an agent: %v", err)
	}
	if !got.Stored || !strings.Contains(got.Note, "no agent answered") || !strings.Contains(got.Note, "no ready kdiag agent pod") || !got.Report.Time.Equal(reported.Time) {
		t.Errorf("fallback: stored=%v note=%q time %s; want the stored report of %s, said so", got.Stored, got.Note, got.Report.Time, reported.Time)
	}
	if _, err := diagnose.Fetch(ctx, cs, "no-such-node", diagnose.FetchOptions{}); err == nil || err.Error() != `node "no-such-node" not found` {
		t.Errorf("unknown node: error %v, want node not found", err)
	}
}

// TestDiagnoseWithoutPSIOrPaths runs the agent where /proc/pressure and the
// disk paths are missing: /healthz and the report say so and the rest of
// the report is filled.
func TestDiagnoseWithoutPSIOrPaths(t *testing.T) {
	c := labtest.Cluster(t)
	missing := filepath.Join(t.TempDir(), "missing")
	d := quickDiagnose()
	a, _ := startAgent(t, c.RESTConfig(), Options{
		PSI:  psi.Options{ProcDir: missing},
		Disk: disk.Options{Paths: []string{missing}}, Diagnose: d, ReportInterval: -1,
	})
	waitUntil(t, 15*time.Second, "the missing PSI named in the agent's problems", func() (bool, error) {
		return strings.Contains(strings.Join(a.Problems(), "\n"), "PSI monitor off: node pressure stall information unavailable"), nil
	})
	var code int
	var body string
	waitUntil(t, 15*time.Second, "/diagnose answering", func() (bool, error) {
		code, body = get(a.Addr(), "/diagnose?format=json")
		return code == http.StatusOK, fmt.Errorf("%d %s", code, body)
	})
	for _, want := range []string{"node PSI unavailable", "disk: stat " + missing, `"apiServer"`, `"ok": true`, `"verdict"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/diagnose lacks %q:\n%s", want, body)
		}
	}
	if code, body := get(a.Addr(), "/diagnose?format=xml"); code != http.StatusBadRequest || !strings.Contains(body, "want json or text") {
		t.Errorf("/diagnose?format=xml: %d %q, want 400 naming the formats", code, body)
	}
	if code, _ := get(a.Addr(), "/diagnose?latest=true"); code != http.StatusNotFound {
		t.Errorf("/diagnose?latest=true with automatic reports off: %d, want 404", code)
	}
}
