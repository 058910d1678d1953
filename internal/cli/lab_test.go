package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kdiag/kdiag/pkg/lab"
)

// runKdiag runs the root command with args and returns stdout, stderr and
// the error.
func runKdiag(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestLabUpStatusDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	dir := t.TempDir()
	t.Cleanup(func() { _ = lab.Down(context.Background(), dir) })

	// --nodes 0: the simulated kubelet would re-execute os.Executable(),
	// which is the test binary here.
	out, errOut, err := runKdiag(t, "lab", "up", "--dir", dir, "--nodes", "0")
	if err != nil {
		t.Fatalf("lab up: %v\nstderr:\n%s", err, errOut)
	}
	if want := "export KUBECONFIG=" + filepath.Join(dir, "kubeconfig") + "\n"; out != want {
		t.Errorf("lab up stdout = %q, want only %q", out, want)
	}
	if !strings.Contains(errOut, "control plane ready") {
		t.Errorf("lab up progress on stderr lacks the ready line:\n%s", errOut)
	}

	out, _, err = runKdiag(t, "lab", "status", "--dir", dir)
	if err != nil {
		t.Fatalf("lab status of a running lab: %v", err)
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if !strings.Contains(out, name) {
			t.Errorf("lab status does not list %s:\n%s", name, out)
		}
	}
	if strings.Contains(out, "stopped") {
		t.Errorf("lab status shows a stopped process:\n%s", out)
	}
	out, _, err = runKdiag(t, "lab", "status", "--dir", dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st lab.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("lab status -o json is not JSON: %v\n%s", err, out)
	}
	if len(st.Processes) != 4 || !st.Running() {
		t.Errorf("status JSON = %+v, want 4 running processes", st)
	}

	_, _, err = runKdiag(t, "lab", "up", "--dir", dir, "--nodes", "0")
	if !errors.Is(err, lab.ErrRunning) {
		t.Errorf("second lab up: error = %v, want ErrRunning", err)
	}

	if _, _, err := runKdiag(t, "lab", "down", "--dir", dir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	_, _, err = runKdiag(t, "lab", "status", "--dir", dir)
	if code := ExitCode(err); code != 2 || !strings.Contains(err.Error(), "kdiag lab up") {
		t.Errorf("lab status after down: exit %d, error %v; want exit 2 and a hint", code, err)
	}
	if _, _, err := runKdiag(t, "lab", "down", "--dir", dir); err != nil {
		t.Errorf("second lab down: %v", err)
	}
}

func TestLabBadInput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative nodes", []string{"lab", "up", "--dir", dir, "--nodes", "-1"}, "--nodes must be 0 or more"},
		{"unknown scenario", []string{"lab", "up", "--dir", dir, "--scenario", "no-such-scenario"}, `unknown scenario "no-such-scenario"`},
		{"bad output format", []string{"lab", "status", "--dir", dir, "-o", "yaml"}, "--output must be text or json"},
		{"kubelet without a lab", []string{"lab", "kubelet", "--dir", filepath.Join(dir, "none")}, "kubeconfig"},
		{"build with a wrong tools dir", []string{"lab", "build", "--tools-dir", dir, "--bin-dir", t.TempDir()}, "no tools/k8s module found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runKdiag(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.want)
			}
			if _, err := lab.ReadState(dir); !errors.Is(err, lab.ErrNoLab) {
				t.Errorf("bad input left a lab state behind: %v", err)
			}
		})
	}
}

func TestLabUpRejectsBadPodsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pods", "sometimes"}, "--pods must be auto, real or simulated"},
		{[]string{"--pods", "real", "--nodes", "0"}, "--pods=real needs --nodes > 0"},
	} {
		_, _, err := runKdiag(t, append([]string{"lab", "up", "--dir", t.TempDir()}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lab up %v = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
