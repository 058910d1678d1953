package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose/diagnosetest"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	uidA = "11111111-2222-3333-4444-555555555555"
	uidB = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// fakeNode lays out a /proc, /proc/pressure and a hybrid cgroup tree
// (CPU in a cgroup v2 hierarchy, memory in v1) in a temp dir.
func fakeNode(t testing.TB, memSomeAvg10 string) (procDir, pressure, v2, memV1 string) {
	t.Helper()
	root := t.TempDir()
	procDir, pressure = filepath.Join(root, "proc"), filepath.Join(root, "proc", "pressure")
	write(t, filepath.Join(procDir, "1", "net", "route"),
		"Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
			"eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"+
			"eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
	write(t, filepath.Join(procDir, "1", "comm"), "systemd\n")
	write(t, filepath.Join(procDir, "42", "comm"), "kubelet\n")
	write(t, filepath.Join(procDir, "43", "comm"), "containerd\n")
	for _, r := range []string{"cpu", "io"} {
		write(t, filepath.Join(pressure, r), "some avg10=1.00 avg60=0.50 avg300=0.10 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	}
	write(t, filepath.Join(pressure, "memory"), "some avg10="+memSomeAvg10+" avg60=30.00 avg300=5.00 total=100\nfull avg10=40.00 avg60=20.00 avg300=2.00 total=50\n")
	v2 = filepath.Join(root, "unified")
	write(t, filepath.Join(v2, "cgroup.controllers"), "")
	memV1 = filepath.Join(root, "memory")
	for i, uid := range []string{uidA, uidB} {
		write(t, filepath.Join(v2, "kubepods", "burstable", "pod"+uid, "cpu.stat"), "usage_usec 1000\nuser_usec 500\n")
		dir := filepath.Join(memV1, "kubepods", "burstable", "pod"+uid)
		write(t, filepath.Join(dir, "memory.usage_in_bytes"), []string{"300000000", "100000000"}[i])
		write(t, filepath.Join(dir, "memory.stat"), "cache 1\ntotal_inactive_file 50000000\n")
	}
	return procDir, pressure, v2, memV1
}

// fakeAPIServer answers /readyz and the kube-dns Service.
func fakeAPIServer(t *testing.T, dnsIP string) kubernetes.Interface {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte("ok"))
		case "/api/v1/namespaces/kube-system/services/kube-dns":
			svc := corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"}, Spec: corev1.ServiceSpec{ClusterIP: dnsIP}}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(svc)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL})
}

func TestDiagnoseFillsEverySection(t *testing.T) {
	procDir, pressure, v2, memV1 := fakeNode(t, "60.00")
	healthz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/runtime" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer healthz.Close()
	dnsAddr := diagnosetest.ClusterDNS(t, "10.96.0.1")
	diskDir := t.TempDir()
	write(t, filepath.Join(diskDir, "pods", "x", "data"), strings.Repeat("x", 100000))
	d := New(Options{
		Node: "n1", Client: fakeAPIServer(t, "10.96.0.10"), ProcPressure: pressure, ProcDir: procDir,
		CgroupV2Roots: []string{v2}, MemoryV1Root: memV1, CPUAcctV1Root: filepath.Join(t.TempDir(), "none"),
		CPUWindow: 50 * time.Millisecond, DiskPaths: []string{diskDir}, DNSServer: dnsAddr,
		KubeletHealthz: healthz.URL, RuntimeHealthz: healthz.URL + "/runtime",
	})
	r := d.Diagnose(context.Background(), "request")
	if r.Node != "n1" || r.Trigger != "request" || r.Duration <= 0 {
		t.Errorf("header: %+v", r)
	}
	if p := r.Pressure; len(p.PSI) != 3 || p.CgroupVersion != "hybrid" || p.Pods != 2 || len(p.TopMemory) != 2 ||
		p.TopMemory[0].UID != uidA || p.TopMemory[0].MemoryBytes != 250000000 || len(p.Errors) != 0 {
		t.Errorf("pressure = %+v, want 3 PSI resources, hybrid cgroups, 2 pods, %s first by memory with 250MB working set", p, uidA)
	}
	if dk := r.Disk; len(dk.Filesystems) != 1 || len(dk.Scans) != 1 || dk.Scans[0].Top[0].Path != diskDir || len(dk.Errors) != 0 {
		t.Errorf("disk = %+v, want one filesystem walked now", dk)
	}
	n := r.Network
	if len(n.DefaultRoutes) != 1 || n.DefaultRoutes[0] != (Route{Interface: "eth0", Gateway: "10.0.0.1", Family: "ipv4"}) {
		t.Errorf("default routes = %+v, want eth0 via 10.0.0.1", n.DefaultRoutes)
	}
	if n.APIServer == nil || !n.APIServer.OK || n.APIServer.Detail != "ok" {
		t.Errorf("API server probe = %+v, want ok", n.APIServer)
	}
	if n.DNS == nil || !n.DNS.OK || n.DNS.Detail != "10.96.0.1" || len(n.Errors) != 0 {
		t.Errorf("DNS probe = %+v (errors %v), want 10.96.0.1", n.DNS, n.Errors)
	}
	h := r.Health
	if !h.Kubelet.ProcessChecked || len(h.Kubelet.Processes) != 1 || h.Kubelet.Processes[0] != 42 || !h.Kubelet.Healthz.OK {
		t.Errorf("kubelet = %+v, want pid 42 and a healthy healthz", h.Kubelet)
	}
	if len(h.Runtime.Processes) != 1 || h.Runtime.Healthz.OK {
		t.Errorf("runtime = %+v, want pid 43 and the failing (404) healthz", h.Runtime)
	}
	if r.Verdict.Culprit != CulpritRuntime || !strings.Contains(r.Verdict.Summary, "404") {
		t.Errorf("verdict = %+v, want container-runtime (its healthz answers 404)", r.Verdict)
	}
	if again := d.Diagnose(context.Background(), "request"); !again.Disk.Scans[0].Time.Equal(r.Disk.Scans[0].Time) {
		t.Errorf("second report walked the disk again (%s, first %s): want the walk reused", again.Disk.Scans[0].Time, r.Disk.Scans[0].Time)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VERDICT", "container-runtime", "memory", "top memory", "top consumers", "default route  ipv4 via 10.0.0.1 dev eth0", "cluster DNS", "kubelet", "running, pid 42"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

func TestDiagnoseRecordsErrorsAndGoesOn(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	d := New(Options{Node: "n1", ProcPressure: missing, ProcDir: missing, CgroupV2Roots: []string{missing},
		MemoryV1Root: missing, CPUAcctV1Root: missing, DiskPaths: []string{missing}, CPUWindow: time.Millisecond,
		DNSServer: "127.0.0.1:1", ProbeTimeout: 500 * time.Millisecond})
	r := d.Diagnose(context.Background(), "request")
	for name, errs := range map[string][]string{"pressure": r.Pressure.Errors, "disk": r.Disk.Errors, "network": r.Network.Errors, "health": r.Health.Errors} {
		if len(errs) == 0 {
			t.Errorf("%s section: no errors recorded for unreadable paths", name)
		}
	}
	if !strings.Contains(strings.Join(r.Pressure.Errors, ";"), "node PSI unavailable") {
		t.Errorf("pressure errors %v: want a clear PSI message", r.Pressure.Errors)
	}
	if r.Network.DNS == nil || r.Network.DNS.OK {
		t.Errorf("DNS probe to a closed port = %+v, want a failure", r.Network.DNS)
	}
	if r.Verdict.Culprit != CulpritDNS {
		t.Errorf("verdict = %+v, want dns (the only failed probe; the rest is unreadable)", r.Verdict)
	}
}

func TestDecide(t *testing.T) {
	full := disk.Filesystem{Paths: []string{"/var/lib/containerd"}, UsedPercent: 97}
	healthy := func() *Report {
		return &Report{
			Health: Health{Kubelet: Component{Name: "kubelet", ProcessNames: []string{"kubelet"}, ProcessChecked: true, Processes: []int{1}},
				Runtime: Component{Name: "containerd", ProcessNames: []string{"containerd"}, ProcessChecked: true, Processes: []int{2}}},
			Network: Network{DefaultRoutes: []Route{{Interface: "eth0"}}, APIServer: &Probe{OK: true}, DNS: &Probe{OK: true}},
			Disk:    Disk{ThresholdPercent: 85, Filesystems: []disk.Filesystem{{Paths: []string{"/var/log"}, UsedPercent: 10}}},
			Pressure: Pressure{PSI: map[string]PSI{"cpu": {SomeAvg10: 1}, "memory": {}, "io": {}},
				TopCPU: []PodUsage{{UID: "u1", Namespace: "shop", Name: "spin", CPUCores: 1.9}}, TopMemory: []PodUsage{{UID: "u2", MemoryBytes: 3 << 30}}},
		}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(r *Report)
		culprit Culprit
		rule    string
		want    string
	}{
		{"healthy", func(*Report) {}, CulpritNone, "healthy", "none:"},
		{"kubelet gone", func(r *Report) { r.Health.Kubelet.Processes = nil }, CulpritKubelet, "kubelet-down", "no process named kubelet"},
		{"kubelet healthz", func(r *Report) { r.Health.Kubelet.Healthz = &Probe{Target: "u", Error: "connection refused"} }, CulpritKubelet, "kubelet-down", "connection refused"},
		{"runtime gone", func(r *Report) { r.Health.Runtime.Processes = nil }, CulpritRuntime, "runtime-down", "containerd is not running"},
		{"no route", func(r *Report) { r.Network.DefaultRoutes = nil }, CulpritNetwork, "no-default-route", "no default route"},
		{"route unreadable is not no route", func(r *Report) {
			r.Network.DefaultRoutes, r.Network.Errors = nil, []string{"default route: open: permission denied"}
		}, CulpritUnknown, "incomplete", "network"},
		{"api down", func(r *Report) { r.Network.APIServer = &Probe{Error: "i/o timeout"} }, CulpritNetwork, "apiserver-unreachable", "i/o timeout"},
		{"disk full", func(r *Report) {
			r.Disk.Filesystems = append(r.Disk.Filesystems, full)
			r.Disk.Scans = []disk.Scan{{Paths: full.Paths, Top: []disk.Consumer{{Path: "/var/lib/containerd", Bytes: 9 << 30}, {Path: "/var/lib/containerd/io.containerd.content.v1.content", Bytes: 8 << 30}}}}
		}, CulpritDisk, "disk-full", "largest: /var/lib/containerd/io.containerd.content.v1.content 8.0GiB"},
		{"memory beats cpu", func(r *Report) {
			r.Pressure.PSI["memory"] = PSI{SomeAvg10: 70, SomeAvg60: 40}
			r.Pressure.PSI["cpu"] = PSI{SomeAvg10: 90}
		}, CulpritMemory, "memory-pressure", "top pod by memory: pod u2 3.0GiB"},
		{"io", func(r *Report) { r.Pressure.PSI["io"] = PSI{SomeAvg60: 30} }, CulpritIO, "io-pressure", "io pressure"},
		{"cpu names the pod", func(r *Report) { r.Pressure.PSI["cpu"] = PSI{SomeAvg10: 55} }, CulpritCPU, "cpu-pressure", "shop/spin 1.90 cores"},
		{"dns", func(r *Report) { r.Network.DNS = &Probe{Target: "kubernetes.default", Error: "SERVFAIL"} }, CulpritDNS, "dns-failing", "SERVFAIL"},
		{"errors without culprit", func(r *Report) { r.Pressure.Errors = []string{"x"} }, CulpritUnknown, "incomplete", "pressure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := healthy()
			tc.mutate(r)
			Decide(r)
			if r.Verdict.Culprit != tc.culprit || r.Verdict.Rule != tc.rule || !strings.Contains(r.Verdict.Summary, tc.want) {
				t.Errorf("verdict = %+v, want %s by rule %s containing %q", r.Verdict, tc.culprit, tc.rule, tc.want)
			}
			if strings.Contains(r.Verdict.Summary, "\n") {
				t.Errorf("verdict %q is not one line", r.Verdict.Summary)
			}
		})
	}
}
