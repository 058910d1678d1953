package agent_test

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

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kdiag/kdiag/internal/cli"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose/diagnosetest"
)

// kdiag runs the kdiag command line in this process.
func kdiag(ctx context.Context, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	root := cli.NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestCLIAgentAndNodeDiagnose runs `kdiag agent --node lab-node-1` with the
// disk and diagnostic flags as the lab node's agent, then `kdiag node
// diagnose lab-node-1` through the API server's pod proxy, as a user would,
// and checks that every section of the report is filled.
func TestCLIAgentAndNodeDiagnose(t *testing.T) {
	c := labtest.Cluster(t)
	const node = "lab-node-1"
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
	dns := diagnosetest.ClusterDNS(t, "10.0.0.1")
	kubeconfig := c.KubeconfigPath()
	labtest.StartAgent(t, c, labtest.AgentOptions{Node: node, Run: func(ctx context.Context, listen string) error {
		_, stderr, err := kdiag(ctx, "agent", "--node", node, "--kubeconfig", kubeconfig, "--listen", listen,
			"--disk-path", diskDir, "--cluster-dns", dns, "--kubelet-healthz", healthz.URL,
			"--kubelet-process", strings.TrimSpace(string(comm)), "--runtime", "kube-apiserver", "--runtime-process", "kube-apiserver",
			"--diagnose-cpu-window", "200ms", "--report-interval", "-1s")
		if err != nil {
			t.Logf("kdiag agent stderr:\n%s", stderr)
		}
		return err
	}})

	ctx := context.Background()
	out, stderr, err := kdiag(ctx, "node", "diagnose", node, "-o", "json", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatalf("kdiag node diagnose: %v\n%s", err, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr %q, want nothing (a fresh report, no fallback)", stderr)
	}
	var r diagnose.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-o json is not a report: %v\n%s", err, out)
	}
	checks := []struct {
		section string
		filled  bool
	}{
		{"pressure: node PSI for cpu, memory, io", len(r.Pressure.PSI) == 3},
		{"disk: the --disk-path filesystem and its top consumers", len(r.Disk.Filesystems) == 1 && len(r.Disk.Scans) == 1 && len(r.Disk.Scans[0].Top) > 0},
		{"network: API server reachable", r.Network.APIServer != nil && r.Network.APIServer.OK},
		{"network: kubernetes.default through --cluster-dns", r.Network.DNS != nil && r.Network.DNS.OK},
		{"health: kubelet healthz and process", r.Health.Kubelet.Healthz != nil && r.Health.Kubelet.Healthz.OK && len(r.Health.Kubelet.Processes) > 0},
		{"health: runtime process", len(r.Health.Runtime.Processes) > 0},
		{"verdict", r.Verdict.Culprit != "" && r.Verdict.Summary != ""},
	}
	for _, ch := range checks {
		if !ch.filled {
			t.Errorf("section not filled: %s", ch.section)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
	text, _, err := kdiag(ctx, "node", "diagnose", node, "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(text, "VERDICT") || !strings.Contains(text, "NETWORK") {
		t.Errorf("kdiag node diagnose (text): %v\n%s", err, text)
	}
}
