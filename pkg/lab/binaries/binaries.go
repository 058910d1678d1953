// Package binaries finds, and when needed builds, the binaries that
// kdiag's lab runs: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kube-proxy, plus kubectl, all at one pinned Kubernetes
// version, and CoreDNS for the cluster DNS of real pods.
//
// The binaries live in a cache directory outside the repository so that a
// fresh clone on the same machine (CI) reuses them. They are built with
// `go build` in two separate Go modules whose go.mod files pin the
// versions: tools/k8s (Kubernetes and etcd) and tools/coredns (CoreDNS).
// CoreDNS has a module of its own because its dependency graph (the cloud
// SDKs of its route53, azure and clouddns plugins, its own pins of gRPC and
// OpenTelemetry) has nothing to do with Kubernetes', and so that a new
// CoreDNS pin rebuilds CoreDNS alone, not the control plane.
// Nothing is downloaded except through the Go module proxy. One stamp file
// per module records its version and a hash of its go.mod and go.sum, so
// that a change of pins triggers a rebuild of that module's binaries.
// A file lock makes parallel callers (for example several `go test`
// packages) build once and wait for each other.
package binaries

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// KubernetesVersion is the Kubernetes release the tools/k8s module pins.
const KubernetesVersion = "v1.37.2"

// CoreDNSVersion is the CoreDNS release the tools/coredns module pins.
const CoreDNSVersion = "v1.15.0"

// EnvBinDir names the environment variable that overrides the cache
// directory holding the binaries.
const EnvBinDir = "KDIAG_LAB_BIN_DIR"

// Names of the binaries in the cache directory.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Proxy             = "kube-proxy"
	// Kubectl is built with the rest so that the lab and its tutorial need
	// no kubectl from elsewhere; the lab itself never runs it.
	Kubectl = "kubectl"
	// CoreDNS is the cluster DNS server of real lab pods.
	CoreDNS = "coredns"
)

// stampFile records what the binaries in a directory were built from
// (tools/k8s; see module.stampFile for the others).
const stampFile = ".kdiag-build-stamp"

// lockFile serialises builds into one directory across processes.
const lockFile = ".kdiag-build.lock"

// toolsModule is the module path declared by tools/k8s/go.mod.
const toolsModule = "github.com/kdiag/kdiag/tools/k8s"

// coreDNSModule is the module path declared by tools/coredns/go.mod.
const coreDNSModule = "github.com/kdiag/kdiag/tools/coredns"

// module is one Go module under tools/ and the binaries built in it.
type module struct {
	// dir is the module's directory name under tools/.
	dir string
	// path is the module path its go.mod declares.
	path string
	// version names what it pins, for the stamp.
	version string
	// stampFile records the stamp of its binaries in the cache directory.
	stampFile string
	// names and targets are the binaries and their `go build` packages.
	names, targets []string
}

// modules returns the tools modules, in build order.
func modules() []module {
	return []module{
		{
			dir: "k8s", path: toolsModule, version: "kubernetes=" + KubernetesVersion, stampFile: stampFile,
			names: []string{Etcd, APIServer, ControllerManager, Scheduler, Proxy, Kubectl},
			targets: []string{
				"./cmd/etcd",
				"k8s.io/kubernetes/cmd/kube-apiserver",
				"k8s.io/kubernetes/cmd/kube-controller-manager",
				"k8s.io/kubernetes/cmd/kube-scheduler",
				"k8s.io/kubernetes/cmd/kube-proxy",
				"k8s.io/kubernetes/cmd/kubectl",
			},
		},
		{
			dir: "coredns", path: coreDNSModule, version: "coredns=" + CoreDNSVersion, stampFile: stampFile + "-coredns",
			names:   []string{CoreDNS},
			targets: []string{"github.com/coredns/coredns"},
		},
	}
}

// Names returns the binaries the lab needs, in a fresh slice.
func Names() []string {
	var out []string
	for _, m := range modules() {
		out = append(out, m.names...)
	}
	return out
}

// Set is a directory that holds a complete set of binaries.
type Set struct {
	// Dir is the directory holding the binaries.
	Dir string
}

// Path returns the path of the named binary (one of the Names constants).
func (s Set) Path(name string) string { return filepath.Join(s.Dir, name) }

// Options says where the binaries live and how to build them.
type Options struct {
	// BinDir is the cache directory. Empty means DefaultBinDir().
	BinDir string
	// ToolsDir is the tools/k8s module directory, or a kdiag checkout that
	// contains it. Empty means: search upwards from the working directory.
	ToolsDir string
	// Force rebuilds even when the stamp says the binaries are current.
	Force bool
	// Progress receives human-readable progress and the output of go build.
	// Nil discards it.
	Progress io.Writer
	// Logger receives debug logs. Nil discards them.
	Logger *slog.Logger
}

// DefaultBinDir returns $KDIAG_LAB_BIN_DIR, or
// <user cache dir>/kdiag/k8s-<version>/bin.
func DefaultBinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate the user cache directory (set %s instead): %w", EnvBinDir, err)
	}
	return filepath.Join(cache, "kdiag", "k8s-"+KubernetesVersion, "bin"), nil
}

// ErrToolsNotFound reports that no tools/k8s module was found.
var ErrToolsNotFound = errors.New("no tools/k8s module found")

// FindToolsDir walks up from start to the first directory that contains
// tools/k8s/go.mod and returns the path of tools/k8s.
func FindToolsDir(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", start, err)
	}
	for {
		cand := filepath.Join(dir, "tools", "k8s")
		if isToolsModule(cand) {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w in %s or any parent directory", ErrToolsNotFound, start)
		}
		dir = parent
	}
}

// ResolveToolsDir accepts either the tools/k8s module directory itself or a
// directory containing tools/k8s, and returns the module directory.
func ResolveToolsDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", dir, err)
	}
	if isToolsModule(abs) {
		return abs, nil
	}
	if cand := filepath.Join(abs, "tools", "k8s"); isToolsModule(cand) {
		return cand, nil
	}
	return "", fmt.Errorf("%w at %s: expected a go.mod declaring %s there or in %s", ErrToolsNotFound, abs, toolsModule, filepath.Join(abs, "tools", "k8s"))
}

// isToolsModule reports whether dir holds a go.mod declaring toolsModule.
func isToolsModule(dir string) bool { return isModule(dir, toolsModule) }

// isModule reports whether dir holds a go.mod declaring module path.
func isModule(dir, path string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == path
		}
	}
	return false
}

// Stamp returns the cache key for the tools/k8s module: the Kubernetes
// version and a SHA-256 over its go.mod and go.sum.
func Stamp(toolsDir string) (string, error) {
	return stamp("kubernetes="+KubernetesVersion, toolsDir)
}

// stamp returns the cache key of a module directory: what it pins and a
// SHA-256 over its go.mod and go.sum.
func stamp(version, toolsDir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(toolsDir, name))
		if err != nil {
			return "", fmt.Errorf("read tools module %s: %w", name, err)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	return fmt.Sprintf("%s tools=sha256:%s\n", version, hex.EncodeToString(h.Sum(nil))), nil
}

// missing returns the binaries among names (all of them when nil) absent
// from dir.
func missing(dir string, names ...string) []string {
	if names == nil {
		names = Names()
	}
	var out []string
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			out = append(out, n)
		}
	}
	return out
}

// current reports whether dir holds every binary of m and a stamp equal
// to want.
func current(dir string, m module, want string) bool {
	if len(missing(dir, m.names...)) > 0 {
		return false
	}
	got, err := os.ReadFile(filepath.Join(dir, m.stampFile))
	return err == nil && string(got) == want
}

// plan is one module to check and maybe build.
type plan struct {
	m     module
	dir   string
	stamp string
}

// plans returns each module's directory (siblings of the tools/k8s
// directory) and stamp.
func plans(k8sDir string) ([]plan, error) {
	var out []plan
	for _, m := range modules() {
		dir := filepath.Join(filepath.Dir(k8sDir), m.dir)
		if !isModule(dir, m.path) {
			return nil, fmt.Errorf("%w: %s does not hold a go.mod declaring %s", ErrToolsNotFound, dir, m.path)
		}
		st, err := stamp(m.version, dir)
		if err != nil {
			return nil, err
		}
		out = append(out, plan{m: m, dir: dir, stamp: st})
	}
	return out, nil
}

// stale returns the plans whose binaries are not current in binDir (all
// with force).
func stale(binDir string, ps []plan, force bool) []plan {
	var out []plan
	for _, p := range ps {
		if force || !current(binDir, p.m, p.stamp) {
			out = append(out, p)
		}
	}
	return out
}

// Ensure returns a complete set of binaries, building them first when they
// are missing or were built from different pins. Without a tools module it
// uses whatever complete set the cache holds, and fails with a clear message
// when there is none.
func Ensure(ctx context.Context, opts Options) (Set, error) {
	return ensure(ctx, opts, false)
}

// Build is Ensure for `kdiag lab build`: it requires the tools module, so
// that the stamp can be checked, and honours Options.Force.
func Build(ctx context.Context, opts Options) (Set, error) {
	return ensure(ctx, opts, true)
}

func ensure(ctx context.Context, opts Options, needTools bool) (Set, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	binDir := opts.BinDir
	if binDir == "" {
		d, err := DefaultBinDir()
		if err != nil {
			return Set{}, err
		}
		binDir = d
	}
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return Set{}, fmt.Errorf("resolve binary directory: %w", err)
	}
	set := Set{Dir: binDir}

	toolsDir, toolsErr := locateTools(opts.ToolsDir)
	if toolsErr != nil {
		if opts.ToolsDir != "" || needTools {
			return Set{}, fmt.Errorf("build control-plane binaries: %w", toolsErr)
		}
		if miss := missing(binDir); len(miss) > 0 {
			return Set{}, fmt.Errorf("control-plane binaries missing in %s (%s) and %v; run `kdiag lab build --tools-dir <kdiag checkout>` or set %s to a directory that holds them",
				binDir, strings.Join(miss, ", "), toolsErr, EnvBinDir)
		}
		log.Debug("using cached control-plane binaries without a tools module to check them against", "dir", binDir)
		return set, nil
	}
	ps, err := plans(toolsDir)
	if err != nil {
		return Set{}, fmt.Errorf("build lab binaries: %w", err)
	}
	if len(stale(binDir, ps, opts.Force)) == 0 {
		log.Debug("lab binaries are current", "dir", binDir)
		return set, nil
	}

	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return Set{}, fmt.Errorf("create binary directory: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(binDir, lockFile), progress)
	if err != nil {
		return Set{}, err
	}
	defer unlock()
	// Another process may have built while we waited for the lock.
	todo := stale(binDir, ps, opts.Force)
	if len(todo) == 0 {
		log.Debug("lab binaries were built by another process", "dir", binDir)
		return set, nil
	}
	if err := build(ctx, todo, binDir, progress); err != nil {
		return Set{}, err
	}
	return set, nil
}

// locateTools resolves an explicit tools directory or searches upwards from
// the working directory.
func locateTools(explicit string) (string, error) {
	if explicit != "" {
		return ResolveToolsDir(explicit)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	return FindToolsDir(wd)
}

// lock takes an exclusive flock on path, polling so that ctx can cancel the
// wait. The returned function releases it.
func lock(ctx context.Context, path string, progress io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told {
			fmt.Fprintf(progress, "kdiag lab: another process is building the control-plane binaries (%s is locked); waiting\n", path)
			told = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("wait for the build lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// build runs go build in each stale module into a temporary directory next
// to binDir, then moves the binaries into place and writes each module's
// stamp last, so that a reader never sees a stamp without complete
// binaries.
func build(ctx context.Context, todo []plan, binDir string, progress io.Writer) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build lab binaries: the go command is not on PATH: %w", err)
	}
	// A build killed half-way (for example by go test -timeout) leaves its
	// directory behind; we hold the lock, so none of them is in use.
	if stale, err := filepath.Glob(filepath.Join(binDir, ".build-*")); err == nil {
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(binDir, ".build-")
	if err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	var what []string
	for _, p := range todo {
		what = append(what, strings.Join(p.m.names, ", ")+" from "+p.dir)
	}
	fmt.Fprintf(progress, "kdiag lab: building Kubernetes %s control-plane binaries and CoreDNS %s (%s) into %s; a cold build takes ~15-20 minutes\n",
		KubernetesVersion, CoreDNSVersion, strings.Join(what, "; "), binDir)
	start := time.Now()
	for _, p := range todo {
		args := append([]string{"build", "-trimpath", "-o", tmp + string(filepath.Separator)}, p.m.targets...)
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = p.dir
		// GOWORK=off: a go.work in a parent directory must not pull the
		// tools module into another workspace.
		cmd.Env = append(os.Environ(), "GOWORK=off")
		cmd.Stdout = progress
		cmd.Stderr = progress
		// If we die (a test binary hitting its -timeout), the build stops
		// too rather than running on unobserved; what it compiled so far
		// stays in the Go build cache, so the next attempt resumes quickly.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build in %s: %w", p.dir, err)
		}
		for _, n := range p.m.names {
			if err := os.Rename(filepath.Join(tmp, n), filepath.Join(binDir, n)); err != nil {
				return fmt.Errorf("install %s: %w", n, err)
			}
		}
		stampTmp := filepath.Join(tmp, p.m.stampFile)
		if err := os.WriteFile(stampTmp, []byte(p.stamp), 0o644); err != nil {
			return fmt.Errorf("write build stamp: %w", err)
		}
		if err := os.Rename(stampTmp, filepath.Join(binDir, p.m.stampFile)); err != nil {
			return fmt.Errorf("install build stamp: %w", err)
		}
	}
	fmt.Fprintf(progress, "kdiag lab: built lab binaries in %s\n", time.Since(start).Round(time.Second))
	return nil
}
