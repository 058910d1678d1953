// Package lab runs a real Kubernetes control plane on loopback: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, built at a
// pinned version (see package binaries). Users try kdiag against it without
// a cluster (`kdiag lab up`), and integration tests talk to the real thing
// (see package labtest). Simulated nodes come from package kubelet and the
// seed's scenarios from package scenario; this package only runs processes.
//
// Everything of one lab lives in one directory (see Layout). Ports are
// picked free at start, so several labs run side by side.
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

// DefaultReadyTimeout bounds the wait for each component to become ready.
const DefaultReadyTimeout = 2 * time.Minute

// portAttempts is how many times Start picks new ports after a collision.
const portAttempts = 3

// Command is an extra process that Start runs once the control plane is
// ready, such as the simulated kubelet re-executed by the CLI. It is stopped
// with the lab.
type Command struct {
	// Name labels the process and names its log file DIR/logs/<Name>.log.
	Name string
	// Path and Args are the executable and its arguments.
	Path string
	Args []string
}

// Options configure Start.
type Options struct {
	// Dir holds everything of the lab. Empty means DefaultDir().
	Dir string
	// Detached starts the processes in their own sessions so that they
	// outlive the caller (kdiag lab up). Otherwise they are killed when the
	// caller dies (tests).
	Detached bool
	// Binaries says where the control-plane binaries are and how to build
	// them when they are missing.
	Binaries binaries.Options
	// Extra processes to start after the control plane is ready.
	Extra []Command
	// ReadyTimeout bounds the wait for each component. Zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Progress receives one human-readable line per step. Nil discards.
	Progress io.Writer
	// Logger receives debug logs. Nil discards them.
	Logger *slog.Logger
	// Pods says whether pods run for real (see PodsMode); empty means
	// PodsSimulated. In real mode Start builds the data plane (DataPlane),
	// serves the API on its link to the host and runs kube-proxy; the
	// simulated kubelet then runs pods whose images resolve to a program.
	Pods PodsMode
	// ProxyNodeName is the node kube-proxy says it runs on (default
	// "lab-node-1"); one kube-proxy serves every node of the lab.
	ProxyNodeName string
	// NodeAddrs are put on the node network's loopback in real mode, for
	// node services that pods reach, such as the node's DNS resolver.
	NodeAddrs []netip.Addr
	// NodeExtra are processes started in the node network in real mode,
	// after kube-proxy and before Extra (such as the node's DNS resolver,
	// listening on one of NodeAddrs). They are ignored in simulated mode.
	NodeExtra []Command
}

// ErrRunning reports that a lab already runs in the directory.
var ErrRunning = errors.New("a lab is already running")

// errPortInUse marks a start-up failure caused by a port collision.
var errPortInUse = errors.New("port already in use")

// Cluster is a running lab.
type Cluster struct {
	layout   Layout
	progress io.Writer
	log      *slog.Logger

	mu    sync.Mutex
	state *State
	procs []*process.Process // started by this value; nil after Open
	rest  *rest.Config
}

// Start runs a new lab in opts.Dir and returns once every component is
// ready. It refuses with ErrRunning when a lab already runs there. Files of
// a previous, stopped lab in the directory are replaced. On failure it
// stops whatever it started and keeps the logs.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir()
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Binaries.Progress == nil {
		opts.Binaries.Progress = opts.Progress
	}
	if opts.Binaries.Logger == nil {
		opts.Binaries.Logger = opts.Logger
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolve lab directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab directory: %w", err)
	}
	l := Layout{Dir: dir}
	unlock, err := lockDir(l)
	if err != nil {
		return nil, err
	}
	defer unlock()

	switch s, err := ReadState(dir); {
	case err == nil:
		if run := s.running(); len(run) > 0 {
			return nil, fmt.Errorf("%w in %s: %s; stop it first with `kdiag lab down --dir %s`", ErrRunning, dir, describe(run), dir)
		}
		// A lab whose processes were killed may have left its data plane.
		if err := s.DataPlane.teardown(ctx); err != nil {
			return nil, err
		}
	case !errors.Is(err, ErrNoLab):
		return nil, fmt.Errorf("%w; make sure no lab process runs, then delete the file", err)
	}

	bins, err := binaries.Ensure(ctx, opts.Binaries)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		c, err := startOnce(ctx, l, bins, opts)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return nil, err
		}
		fmt.Fprintf(opts.Progress, "kdiag lab: %v; retrying with other ports\n", err)
	}
}

// startOnce starts the lab with freshly picked ports.
func startOnce(ctx context.Context, l Layout, bins binaries.Set, opts Options) (_ *Cluster, err error) {
	begin := time.Now()
	if err := l.clean(); err != nil {
		return nil, fmt.Errorf("clean lab directory: %w", err)
	}
	pp, err := pickPorts(5)
	if err != nil {
		return nil, err
	}
	ports := Ports{EtcdClient: pp[0], EtcdPeer: pp[1], APIServer: pp[2], ControllerManager: pp[3], Scheduler: pp[4]}
	c := &Cluster{
		layout:   l,
		progress: opts.Progress,
		log:      opts.Logger,
		state: &State{
			Version:           stateVersion,
			Dir:               l.Dir,
			KubernetesVersion: binaries.KubernetesVersion,
			BinDir:            bins.Dir,
			Detached:          opts.Detached,
			Ports:             ports,
			StartedAt:         time.Now().UTC(),
		},
	}
	// The state file exists before anything is created on the machine, so
	// that a crash at any later point leaves something `lab down` reads.
	if err := c.state.write(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// ctx may be the reason we fail; cleaning up needs its own.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*stopGrace)
			defer cancel()
			if serr := c.Stop(stopCtx); serr != nil {
				err = fmt.Errorf("%w (and stopping what had started failed: %v)", err, serr)
			}
		}
	}()
	dp, err := newDataPlane(ctx, opts.Pods, opts.Progress)
	if err != nil {
		return nil, err
	}
	var extraIPs []net.IP
	if dp != nil {
		c.state.DataPlane = dp
		extraIPs = append(extraIPs, net.ParseIP(dp.APIServerHost()))
		if err := c.state.write(); err != nil {
			return nil, err
		}
		fmt.Fprintf(c.progress, "kdiag lab: node network %s ready (pods reach the API server at %s)\n", dp.Network.Netns, dp.APIServerURL(ports.APIServer))
	}
	if _, err := generatePKI(l, extraIPs...); err != nil {
		return nil, err
	}
	server := c.state.server()
	kubeconfigs := []struct{ path, user, cert string }{
		{l.Kubeconfig(), AdminUser, adminName},
		{l.Config(controllerManagerName), controllerManagerUser, controllerManagerName},
		{l.Config(schedulerName), schedulerUser, schedulerName},
	}
	for _, kc := range kubeconfigs {
		if err := writeKubeconfig(l, kc.path, server, kc.user, kc.cert); err != nil {
			return nil, err
		}
	}
	if dp != nil {
		// Used from the node network: the API server through the
		// kubelet's forwarder on the link's host address.
		for _, kc := range []struct{ path, user, cert string }{
			{l.Config(kubeProxyName), kubeProxyUser, kubeProxyName},
			{l.PodKubeconfig(), PodsUser, podsName},
		} {
			if err := writeKubeconfig(l, kc.path, dp.APIServerURL(ports.APIServer), kc.user, kc.cert); err != nil {
				return nil, err
			}
		}
	}
	restCfg, err := loadRESTConfig(l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	c.rest = restCfg

	hc, err := healthClient(l)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	etcdClient := &http.Client{Transport: &http.Transport{}}
	defer etcdClient.CloseIdleConnections()
	steps := []struct {
		comp  component
		ready func(context.Context) error
	}{
		{etcdComponent(l, ports), func(ctx context.Context) error {
			return getOK(ctx, etcdClient, ports.etcdClientURL()+"/health", `"health":"true"`)
		}},
		{apiServerComponent(l, ports), c.apiserverReady},
		{controllerManagerComponent(l, ports), func(ctx context.Context) error {
			return getOK(ctx, hc, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports.ControllerManager), "ok")
		}},
		{schedulerComponent(l, ports), func(ctx context.Context) error {
			return getOK(ctx, hc, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports.Scheduler), "ok")
		}},
	}
	started := make(map[string]*process.Process, len(steps))
	for _, s := range steps {
		t0 := time.Now()
		p, err := c.launch(s.comp.name, bins.Path(s.comp.name), s.comp.args, opts.Detached)
		if err != nil {
			return nil, err
		}
		started[s.comp.name] = p
		if err := c.waitReady(ctx, p, s.comp.name, opts.ReadyTimeout, s.ready); err != nil {
			return nil, err
		}
		fmt.Fprintf(c.progress, "kdiag lab: %s ready on loopback in %s\n", s.comp.name, time.Since(t0).Round(10*time.Millisecond))
	}
	// The controller manager's health endpoint answers before its
	// controllers have done anything; the "default" ServiceAccount proves
	// that they run and can write through the apiserver.
	if err := c.waitReady(ctx, started[binaries.ControllerManager], "kube-controller-manager controllers (default ServiceAccount)", opts.ReadyTimeout, c.defaultServiceAccount); err != nil {
		return nil, err
	}
	if dp != nil {
		node := opts.ProxyNodeName
		if node == "" {
			node = "lab-node-1"
		}
		kp := kubeProxyComponent(l, dp, node)
		if _, err := c.launchSpec(process.Spec{Name: kp.name, Path: bins.Path(kp.name), Args: kp.args, Netns: dp.Network.NetnsPath()}, opts.Detached); err != nil {
			return nil, err
		}
		fmt.Fprintf(c.progress, "kdiag lab: kube-proxy (iptables mode) started in %s\n", dp.Network.Netns)
		for _, a := range opts.NodeAddrs {
			if err := dp.Network.AddLocalAddr(ctx, a); err != nil {
				return nil, err
			}
		}
		for _, x := range opts.NodeExtra {
			if _, err := c.launchSpec(process.Spec{Name: x.Name, Path: x.Path, Args: x.Args, Netns: dp.Network.NetnsPath()}, opts.Detached); err != nil {
				return nil, err
			}
		}
	}
	for _, x := range opts.Extra {
		if _, err := c.launch(x.Name, x.Path, x.Args, opts.Detached); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(c.progress, "kdiag lab: control plane ready at %s in %s\n", server, time.Since(begin).Round(10*time.Millisecond))
	return c, nil
}

// launch starts one process and records it in the state file.
func (c *Cluster) launch(name, path string, args []string, detached bool) (*process.Process, error) {
	return c.launchSpec(process.Spec{Name: name, Path: path, Args: args}, detached)
}

// launchSpec starts spec in the lab directory with its log file, and
// records it in the state file.
func (c *Cluster) launchSpec(spec process.Spec, detached bool) (*process.Process, error) {
	name := spec.Name
	// Running in the lab directory, a detached process does not pin the
	// directory lab up was called from.
	spec.Dir = c.layout.Dir
	spec.LogFile = c.layout.Log(name)
	spec.Detached = detached
	p, err := process.Start(spec)
	if errors.Is(err, process.ErrExited) {
		return nil, logError(err, c.layout.Log(name))
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
	c.state.Processes = append(c.state.Processes, p.Record)
	c.log.Debug("started", "name", name, "pid", p.PID, "args", spec.Args)
	return p, c.state.write()
}

// waitReady polls ready until it succeeds, the process exits, or timeout.
func (c *Cluster) waitReady(ctx context.Context, p *process.Process, what string, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = ready(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return logError(fmt.Errorf("%s exited before it was ready (%v)", p.Name, p.Err()), p.LogFile)
		case <-ctx.Done():
			return logError(fmt.Errorf("%s not ready after %s: %v", what, timeout, last), p.LogFile)
		case <-tick.C:
		}
	}
}

// logError appends the last line of a log file to err, and marks port
// collisions so that Start can retry with other ports.
func logError(err error, logFile string) error {
	data, rerr := os.ReadFile(logFile)
	if rerr != nil {
		return fmt.Errorf("%w; see %s", err, logFile)
	}
	if strings.Contains(string(data), "address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	lastLine := strings.TrimSpace(lines[len(lines)-1])
	if len(lastLine) > 300 {
		lastLine = lastLine[:300] + "..."
	}
	if lastLine == "" {
		return fmt.Errorf("%w; see %s", err, logFile)
	}
	return fmt.Errorf("%w; last log line: %q; see %s", err, lastLine, logFile)
}

// apiserverReady asks /readyz with the admin identity.
func (c *Cluster) apiserverReady(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("/readyz answered %q", body)
	}
	return nil
}

// defaultServiceAccount checks that default/default exists.
func (c *Cluster) defaultServiceAccount(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	_, err = cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return errors.New(`ServiceAccount default/default not created yet`)
	}
	return err
}

// healthClient is an HTTPS client trusting only the lab CA, for the health
// endpoints of the controller manager and the scheduler.
func healthClient(l Layout) (*http.Client, error) {
	caPEM, err := os.ReadFile(l.PKIFile(caName + ".crt"))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("lab CA certificate does not parse")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// getOK GETs url and expects status 200 and a body containing want.
func getOK(ctx context.Context, hc *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s %q", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// loadRESTConfig reads a kubeconfig and raises the client-side rate limits,
// which are meant for shared clusters, not a local lab.
func loadRESTConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS = 200
	cfg.Burst = 400
	return cfg, nil
}

// Open attaches to the lab running in dir, for example one started by
// `kdiag lab up`. It fails when the lab is not running completely.
func Open(dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve lab directory: %w", err)
	}
	s, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	var dead []process.Record
	for _, r := range s.Processes {
		if !process.Alive(r) {
			dead = append(dead, r)
		}
	}
	if len(dead) > 0 || len(s.Processes) == 0 {
		return nil, fmt.Errorf("the lab in %s is not running (stopped: %s); run `kdiag lab down --dir %s`, then `kdiag lab up`", dir, describe(dead), dir)
	}
	l := Layout{Dir: dir}
	cfg, err := loadRESTConfig(l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	return &Cluster{layout: l, progress: io.Discard, log: slog.New(slog.DiscardHandler), state: s, rest: cfg}, nil
}

// Dir returns the lab directory.
func (c *Cluster) Dir() string { return c.layout.Dir }

// KubeconfigPath returns the path of the admin kubeconfig.
func (c *Cluster) KubeconfigPath() string { return c.layout.Kubeconfig() }

// Server returns the kube-apiserver URL.
func (c *Cluster) Server() string { return c.state.server() }

// DataPlane returns the lab's data plane, or nil when its pods are
// simulated.
func (c *Cluster) DataPlane() *DataPlane { return c.state.DataPlane }

// Layout returns the names of the lab's files.
func (c *Cluster) Layout() Layout { return c.layout }

// Ports returns the ports the lab listens on.
func (c *Cluster) Ports() Ports { return c.state.Ports }

// RESTConfig returns a copy of the admin client configuration
// (group system:masters).
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// ClientCertConfig returns a client configuration authenticating as user in
// groups with a certificate from the lab CA valid until notAfter. A
// notAfter in the past yields an expired certificate, which the apiserver
// rejects as Unauthorized. Without RBAC bindings the user is Forbidden
// from nearly everything.
func (c *Cluster) ClientCertConfig(user string, groups []string, notAfter time.Time) (*rest.Config, error) {
	cfg, err := clientCertConfig(c.layout, c.Server(), user, groups, notAfter)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = c.rest.QPS, c.rest.Burst
	return cfg, nil
}

// Processes returns the records of the lab's processes.
func (c *Cluster) Processes() []process.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]process.Record(nil), c.state.Processes...)
}

// Stop stops every process of the lab (SIGTERM, then SIGKILL after a grace
// period), waits until they are gone and removes the state file. Logs,
// certificates and etcd data stay in the directory. Stop is idempotent.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := stopRecords(ctx, c.state.Processes); err != nil {
		return fmt.Errorf("stop lab in %s: %w", c.layout.Dir, err)
	}
	// Children of this process are reaped by their wait goroutines; wait
	// for that so that not even a zombie is left.
	for _, p := range c.procs {
		select {
		case <-p.Done():
		case <-ctx.Done():
			return fmt.Errorf("stop lab in %s: wait for %s: %w", c.layout.Dir, p.Name, ctx.Err())
		}
	}
	if err := c.state.DataPlane.teardown(ctx); err != nil {
		return fmt.Errorf("stop lab in %s: %w", c.layout.Dir, err)
	}
	if err := os.Remove(c.layout.State()); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove lab state: %w", err)
	}
	return nil
}
