package binaries

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeTools writes a miniature tools/k8s module under root whose build
// targets have the real import paths but trivial main functions, so that
// the build, lock and stamp logic run for real in seconds and offline.
func fakeTools(t *testing.T, root string) string {
	t.Helper()
	tools := filepath.Join(root, "tools", "k8s")
	files := map[string]string{
		"go.mod":                                "module " + toolsModule + "\n\ngo 1.26\n\nrequire k8s.io/kubernetes v0.0.0\n\nreplace k8s.io/kubernetes => ./kubernetes\n",
		"go.sum":                                "",
		"cmd/etcd/main.go":                      "package main\n\nfunc main() {}\n",
		"kubernetes/go.mod":                     "module k8s.io/kubernetes\n\ngo 1.26\n",
		"kubernetes/cmd/kube-apiserver/main.go": "package main\n\nfunc main() {}\n",
		"kubernetes/cmd/kube-controller-manager/main.go": "package main\n\nfunc main() {}\n",
		"kubernetes/cmd/kube-scheduler/main.go":          "package main\n\nfunc main() {}\n",
		"kubernetes/cmd/kube-proxy/main.go":              "package main\n\nfunc main() {}\n",
		"kubernetes/cmd/kubectl/main.go":                 "package main\n\nfunc main() {}\n",
		"../coredns/go.mod":                              "module " + coreDNSModule + "\n\ngo 1.26\n\nrequire github.com/coredns/coredns v0.0.0\n\nreplace github.com/coredns/coredns => ./coredns\n",
		"../coredns/go.sum":                              "",
		"../coredns/coredns/go.mod":                      "module github.com/coredns/coredns\n\ngo 1.26\n",
		"../coredns/coredns/coredns.go":                  "package main\n\nfunc main() {}\n",
	}
	for name, body := range files {
		p := filepath.Join(tools, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tools
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestFindAndResolveToolsDir(t *testing.T) {
	root := t.TempDir()
	tools := fakeTools(t, root)
	deep := filepath.Join(root, "pkg", "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()

	tests := []struct {
		name    string
		fn      func(string) (string, error)
		arg     string
		want    string
		wantErr bool
	}{
		{"find from a nested directory", FindToolsDir, deep, tools, false},
		{"find from the checkout root", FindToolsDir, root, tools, false},
		{"find fails outside a checkout", FindToolsDir, other, "", true},
		{"resolve the module directory", ResolveToolsDir, tools, tools, false},
		{"resolve a checkout root", ResolveToolsDir, root, tools, false},
		{"resolve rejects an unrelated directory", ResolveToolsDir, other, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn(tc.arg)
			if tc.wantErr {
				if !errors.Is(err, ErrToolsNotFound) {
					t.Fatalf("%s(%s) error = %v, want ErrToolsNotFound", tc.name, tc.arg, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got (%q, %v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestEnsureMissingBinariesWithoutToolsModule(t *testing.T) {
	t.Chdir(t.TempDir())
	binDir := filepath.Join(t.TempDir(), "bin")
	_, err := Ensure(context.Background(), Options{BinDir: binDir})
	if err == nil {
		t.Fatal("Ensure succeeded with no binaries and no tools module")
	}
	msg := err.Error()
	for _, want := range []string{"missing in " + binDir, "kube-apiserver", "etcd", "coredns", "kdiag lab build", EnvBinDir, "no tools/k8s module found"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans several lines: %q", msg)
	}
}

func TestBuildRequiresToolsModule(t *testing.T) {
	t.Chdir(t.TempDir())
	_, err := Build(context.Background(), Options{BinDir: t.TempDir()})
	if !errors.Is(err, ErrToolsNotFound) {
		t.Fatalf("Build without a tools module: error = %v, want ErrToolsNotFound", err)
	}
	_, err = Ensure(context.Background(), Options{BinDir: t.TempDir(), ToolsDir: t.TempDir()})
	if !errors.Is(err, ErrToolsNotFound) {
		t.Fatalf("Ensure with an explicit wrong --tools-dir: error = %v, want ErrToolsNotFound", err)
	}
}

func TestEnsureBuildsOnceThenReusesAndRebuildsOnNewPins(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build; skipped with -short")
	}
	root := t.TempDir()
	tools := fakeTools(t, root)
	binDir := filepath.Join(t.TempDir(), "bin")
	ctx := context.Background()
	progress := &syncBuffer{}
	opts := Options{BinDir: binDir, ToolsDir: tools, Progress: progress}

	// Three concurrent callers, as with parallel test packages: one builds,
	// the others wait on the lock and then find the stamp current.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Ensure(ctx, opts)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v\nprogress:\n%s", i, err, progress)
		}
	}
	if n := strings.Count(progress.String(), "kdiag lab: building"); n != 1 {
		t.Fatalf("concurrent Ensure built %d times, want 1; progress:\n%s", n, progress)
	}
	if !strings.Contains(progress.String(), "15-20 minutes") {
		t.Errorf("build progress does not warn about the cold build time:\n%s", progress)
	}
	set, err := Ensure(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range Names() {
		if _, err := os.Stat(set.Path(n)); err != nil {
			t.Errorf("binary %s not installed: %v", n, err)
		}
	}
	if n := strings.Count(progress.String(), "kdiag lab: building"); n != 1 {
		t.Fatalf("Ensure rebuilt current binaries (%d builds)", n)
	}

	// Without any tools module, the complete cache is used as is.
	t.Chdir(t.TempDir())
	if _, err := Ensure(ctx, Options{BinDir: binDir}); err != nil {
		t.Fatalf("Ensure with a complete cache and no tools module: %v", err)
	}

	// New pins mean a new stamp, hence a rebuild.
	if err := os.WriteFile(filepath.Join(tools, "go.sum"), []byte("example.com/x v1.0.0 h1:AAAA=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(progress.String(), "kdiag lab: building"); n != 2 {
		t.Fatalf("changed go.sum caused %d builds in total, want 2", n)
	}
	// New CoreDNS pins rebuild CoreDNS alone.
	progress2 := &syncBuffer{}
	coredns := filepath.Join(filepath.Dir(tools), "coredns")
	if err := os.WriteFile(filepath.Join(coredns, "go.sum"), []byte("example.com/y v1.0.0 h1:BBBB=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, Options{BinDir: binDir, ToolsDir: tools, Progress: progress2}); err != nil {
		t.Fatal(err)
	}
	if out := progress2.String(); !strings.Contains(out, "(coredns from "+coredns+")") || strings.Contains(out, "kube-apiserver") {
		t.Fatalf("changed tools/coredns/go.sum: progress %q, want a build of coredns alone", out)
	}
	if _, err := Build(ctx, Options{BinDir: binDir, ToolsDir: root, Progress: progress, Force: true}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(progress.String(), "kdiag lab: building"); n != 3 {
		t.Fatalf("Build with Force caused %d builds in total, want 3", n)
	}
	// Leftovers of a killed build are removed by the next build.
	stale := filepath.Join(binDir, ".build-killed")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	// Without tools/coredns the checkout is incomplete: a clear error.
	broken := t.TempDir()
	brokenTools := fakeTools(t, broken)
	if err := os.RemoveAll(filepath.Join(broken, "tools", "coredns")); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, Options{BinDir: t.TempDir(), ToolsDir: brokenTools}); !errors.Is(err, ErrToolsNotFound) || !strings.Contains(err.Error(), coreDNSModule) {
		t.Errorf("Ensure without tools/coredns: error = %v, want ErrToolsNotFound naming %s", err, coreDNSModule)
	}
	// A missing binary is noticed even with a current stamp.
	if err := os.Remove(set.Path(Scheduler)); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(set.Path(Scheduler)); err != nil {
		t.Fatalf("missing binary not rebuilt: %v", err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("stale build directory %s survived a build", stale)
	}
}

func TestStampDependsOnPins(t *testing.T) {
	tools := fakeTools(t, t.TempDir())
	a, err := Stamp(tools)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a, KubernetesVersion) {
		t.Errorf("stamp %q lacks the Kubernetes version", a)
	}
	if err := os.WriteFile(filepath.Join(tools, "go.sum"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := Stamp(tools)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("stamp did not change with go.sum: %q", a)
	}
	if _, err := Stamp(t.TempDir()); err == nil {
		t.Error("Stamp of a directory without go.mod succeeded")
	}
}
