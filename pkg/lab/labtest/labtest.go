// Package labtest gives integration tests a real control plane from
// package lab.
//
// A test package starts at most one shared lab, lazily, on the first call
// of Cluster, and stops it when its tests are done:
//
//	func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 3}) }
//
//	func TestSomething(t *testing.T) {
//		c := labtest.Cluster(t)
//		cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
//		...
//	}
//
// The lab runs in a temporary directory with attached processes: they get
// SIGKILL when the test binary dies, even on a panic or a -timeout, so no
// control plane outlives its tests. Missing binaries are built (under a
// file lock, so parallel packages build once); a test never skips because
// of them. With -short, Cluster skips the test with a message saying so.
//
// NewCluster starts a private lab for one test instead.
package labtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// Options configure the shared lab of a test package.
type Options struct {
	// Nodes > 0 runs the simulated kubelet in the test process with that
	// many nodes, and Cluster waits until they are Ready.
	Nodes int
	// Kubelet holds further simulator options; its Nodes field is
	// replaced by Nodes.
	Kubelet kubelet.Options
	// Lab holds further lab options; Dir and Detached are ignored. Set
	// Lab.Pods to lab.PodsAuto or lab.PodsReal for real pods (the default
	// simulates them, cheaply: most packages need no more). Real pods need
	// Nodes > 0: the in-process kubelet runs them and relays the node
	// network's connections to the API server.
	Lab lab.Options
	// Resolver decides, in real mode, which containers run and how (see
	// runtime.Resolver); nil runs none. With Lab.Pods real, build commands
	// with runtime.ProgramCommand and set Program.
	Resolver runtime.Resolver
	// BackOff is the first restart delay of real containers (default
	// runtime.DefaultBackOff, 10s); tests of restarts shorten it.
	BackOff time.Duration
	// Program runs a built-in lab program (runtime.ProgramCommand) when the
	// test binary is re-executed as `TESTBINARY lab program NAME ARGS...`,
	// which is how real pods run their containers: Main calls it instead
	// of the tests and exits 1 when it fails. Set it to the function that
	// `kdiag lab program` calls, so that the test binary acts as kdiag.
	Program func(ctx context.Context, name string, args []string) error
}

// shared is the test binary's one lab. TestMain and the test functions
// share nothing but package state, since package testing offers no other
// channel between them; hence this guarded package-level variable.
var shared struct {
	mu      sync.Mutex
	mainRan bool
	opts    Options
	once    sync.Once
	env     *env
	err     error
}

// env is a started lab with its in-process kubelet.
type env struct {
	dir         string
	cluster     *lab.Cluster
	stopKubelet context.CancelFunc
	kubeletDone chan error
}

// Main runs the package's tests and then stops the shared lab, if a test
// started one. Call it from TestMain; it does not return.
func Main(m *testing.M, opts Options) {
	if name, args, ok := runtime.ProgramInvocation(os.Args); ok {
		os.Exit(runProgram(opts, name, args))
	}
	os.Exit(run(m, opts))
}

// runProgram is the test binary acting as `kdiag lab program NAME ARGS...`.
// It stops at SIGTERM or SIGINT, as kdiag does.
func runProgram(opts Options, name string, args []string) int {
	if opts.Program == nil {
		fmt.Fprintf(os.Stderr, "labtest: asked to run lab program %q, but labtest.Options.Program is nil\n", name)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := opts.Program(ctx, name, args); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "lab program %s: %v\n", name, err)
		return 1
	}
	return 0
}

func run(m *testing.M, opts Options) int {
	shared.mu.Lock()
	shared.mainRan = true
	shared.opts = opts
	shared.mu.Unlock()

	code := m.Run()

	shared.mu.Lock()
	e := shared.env
	shared.mu.Unlock()
	if e == nil {
		return code
	}
	if err := e.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "labtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "labtest: lab logs kept in %s/logs\n", e.dir)
	} else {
		_ = os.RemoveAll(e.dir)
	}
	return code
}

// Cluster returns the package's shared lab, starting it on first use. It
// fails the test when the lab cannot start, and skips it with -short.
func Cluster(t testing.TB) *lab.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler); skipped with -short")
	}
	shared.mu.Lock()
	mainRan, opts := shared.mainRan, shared.opts
	shared.mu.Unlock()
	if !mainRan {
		t.Fatal("labtest.Cluster needs TestMain to call labtest.Main(m, opts)")
	}
	shared.once.Do(func() {
		e, err := start(opts)
		shared.mu.Lock()
		shared.env, shared.err = e, err
		shared.mu.Unlock()
	})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.err != nil {
		t.Fatalf("start the shared lab: %v", shared.err)
	}
	return shared.env.cluster
}

// NewCluster starts a private lab for one test in t.TempDir() and stops it
// when the test ends. Use it for tests that need a lab of their own, for
// example to stop it; everything else should share Cluster(t).
func NewCluster(t testing.TB, opts lab.Options) *lab.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against a real control plane; skipped with -short")
	}
	opts.Dir = t.TempDir()
	opts.Detached = false
	if opts.Progress == nil {
		opts.Progress = testWriter{t}
	}
	c, err := lab.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start a lab: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop the lab: %v", err)
		}
	})
	return c
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs the shared lab and, when asked, the kubelet simulator.
func start(opts Options) (*env, error) {
	dir, err := os.MkdirTemp("", "kdiag-labtest-")
	if err != nil {
		return nil, fmt.Errorf("create lab directory: %w", err)
	}
	lo := opts.Lab
	lo.Dir = dir
	lo.Detached = false
	if lo.Progress == nil {
		lo.Progress = os.Stderr
	}
	ctx := context.Background()
	c, err := lab.Start(ctx, lo)
	if err != nil {
		return nil, fmt.Errorf("%w (logs in %s/logs)", err, dir)
	}
	e := &env{dir: dir, cluster: c}
	if opts.Nodes <= 0 {
		return e, nil
	}
	ko := opts.Kubelet
	ko.Nodes = opts.Nodes
	if c.DataPlane() != nil {
		resolver := opts.Resolver
		if resolver == nil {
			resolver = runtime.Chain()
		}
		ko.Real = &kubelet.RealPods{Dir: dir, Resolver: resolver, BackOff: opts.BackOff}
	}
	if ko.Logger == nil {
		ko.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	kctx, cancel := context.WithCancel(ctx)
	e.stopKubelet = cancel
	e.kubeletDone = make(chan error, 1)
	go func() { e.kubeletDone <- kubelet.Run(kctx, c.RESTConfig(), ko) }()
	if err := lab.WaitForNodes(ctx, c.RESTConfig(), opts.Nodes, 2*time.Minute); err != nil {
		serr := e.stop()
		return nil, fmt.Errorf("simulated kubelet: %w (stop: %v)", err, serr)
	}
	return e, nil
}

// stop ends the kubelet simulator, then the control plane.
func (e *env) stop() error {
	var kerr error
	if e.stopKubelet != nil {
		e.stopKubelet()
		select {
		case err := <-e.kubeletDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				kerr = fmt.Errorf("simulated kubelet: %w", err)
			}
		case <-time.After(30 * time.Second):
			kerr = fmt.Errorf("simulated kubelet did not stop within 30s")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.cluster.Stop(ctx); err != nil {
		return fmt.Errorf("stop the shared lab: %w", err)
	}
	return kerr
}
