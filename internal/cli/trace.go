package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
	"github.com/kdiag/kdiag/pkg/gadget/remote"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
	"github.com/kdiag/kdiag/pkg/hostid"
)

type traceFlags struct {
	pod, container, selector, output string
	nodes                            []string
	allNodes, local                  bool
	duration                         time.Duration
	noK8s                            bool
	ringMiB                          uint32

	failuresOnly bool
	dnsTimeout   time.Duration
	dnsPorts     []uint

	// localNodes are the nodes hosted on this machine, found once by
	// runTrace (see localNodes).
	localNodes []string
}

func newTraceCommand(g *Globals) *cobra.Command {
	f := &traceFlags{}
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Trace TCP, DNS and OOM kills with eBPF, labelled with Kubernetes names, on this node or through the agents",
		Long: `trace runs an eBPF gadget and streams its events, labelled with node, namespace,
pod and container, and with IP addresses named as pod/ns/name or svc/ns/name. Filters
(-n, -p, -c, -l) are applied in the kernel where possible. Events lost because the
reader could not keep up are counted and reported.

Local mode runs the gadget on this machine (as root). Cluster mode streams it from the
kdiag agent of each selected node through the API server's pod proxy and merges the
streams; it is chosen by --all-nodes, by --node naming another node, or by a pod
filter whose pods run on other nodes (--local forces local mode). The summary on
stderr names the nodes that answered, those without an agent and those that failed,
with each node's lost events.

  tcp       connects, accepts, closes, failed connects with errno, RSTs, retransmits
  dns       queries and responses with rcode, answers and latency; unanswered queries
  oomkill   OOM kills with victim, trigger, pages and the memory cgroup's pod

Without a kubeconfig (or with --no-k8s) events flow without Kubernetes names.
See docs/commands/trace.md.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&f.pod, "pod", "p", "", "trace only pods whose name starts with this prefix")
	pf.StringVarP(&f.container, "container", "c", "", "trace only containers with this name")
	pf.StringVarP(&f.selector, "selector", "l", "", "trace only pods matching this label selector")
	pf.StringSliceVar(&f.nodes, "node", nil, "nodes to trace (comma-separated); another node than this one is traced through its agent (this node is $NODE_NAME or the host name)")
	pf.BoolVar(&f.allNodes, "all-nodes", false, "trace every node through its agent")
	pf.BoolVar(&f.local, "local", false, "trace this machine only, even when the pods of a filter run elsewhere")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json (one object per line)")
	pf.DurationVar(&f.duration, "duration", 0, "stop after this long (default: until interrupted)")
	pf.BoolVar(&f.noK8s, "no-k8s", false, "do not contact the API server; events carry no Kubernetes names")
	pf.Uint32Var(&f.ringMiB, "ring-mib", 8, "ring buffer size in MiB (a power of two)")

	tcpCmd := &cobra.Command{
		Use:   "tcp",
		Short: "Trace TCP connects, accepts, closes, failures (errno), RSTs and retransmits",
		Example: `  kdiag trace tcp -n shop -p storefront --failures-only
  kdiag trace tcp -o json --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTrace(cmd, g, f, wire.TCP, runTraceTCP) },
	}
	tcpCmd.Flags().BoolVar(&f.failuresOnly, "failures-only", false, "only failed connects, closes with an error, RSTs and retransmits")

	dnsCmd := &cobra.Command{
		Use:   "dns",
		Short: "Trace DNS queries and responses, and queries never answered",
		Example: `  kdiag trace dns -n shop
  kdiag trace dns -n kube-system -p coredns --timeout 5s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTrace(cmd, g, f, wire.DNS, runTraceDNS) },
	}
	dnsCmd.Flags().DurationVar(&f.dnsTimeout, "timeout", 2*time.Second, "report a query as unanswered after this long")
	dnsCmd.Flags().UintSliceVar(&f.dnsPorts, "ports", []uint{53}, "UDP/TCP ports that carry DNS (comma-separated)")

	oomCmd := &cobra.Command{
		Use:     "oomkill",
		Short:   "Trace OOM kills: victim, trigger, pages and the memory cgroup's pod and container",
		Example: `  kdiag trace oomkill -o json`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runTrace(cmd, g, f, wire.OOMKill, runTraceOOMKill) },
	}
	cmd.AddCommand(tcpCmd, dnsCmd, oomCmd)
	return cmd
}

// traceRun is what every gadget command needs before it starts.
type traceRun struct {
	ctx    context.Context
	cancel context.CancelFunc
	opts   gadget.Options
	out    *render.Writer
}

func (f *traceFlags) setup(cmd *cobra.Command, g *Globals, name string, columns []string) (*traceRun, error) {
	format, err := render.ParseFormat(f.output)
	if err != nil {
		return nil, err
	}
	if f.ringMiB == 0 || f.ringMiB&(f.ringMiB-1) != 0 {
		return nil, fmt.Errorf("--ring-mib %d: must be a power of two", f.ringMiB)
	}
	log := g.Logger()
	ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	if f.duration > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, f.duration)
		prev := cancel
		cancel = func() { c2(); prev() }
	}
	filter, err := f.filter(g)
	if err != nil {
		cancel()
		return nil, err
	}
	locals := f.localNodes
	if locals == nil {
		locals = localNodes(ctx, nil)
	}
	for _, n := range f.nodes {
		if len(locals) > 0 && !slices.Contains(locals, n) {
			cancel()
			return nil, fmt.Errorf("--node %s: this machine hosts %s; local tracing sees only the nodes hosted here, and tracing another node through its agent needs the API server (set NODE_NAME if the host name is not the node name)", n, strings.Join(locals, ", "))
		}
	}
	if len(f.nodes) == 1 {
		filter.Node = f.nodes[0]
	}
	// One local node labels every event with it and lists only its pods;
	// a machine hosting several nodes (the lab) lists every pod and labels
	// each event with its pod's node.
	nodeName := ""
	if len(locals) == 1 {
		nodeName = locals[0]
	}
	var source enrich.Source
	if !f.noK8s {
		source, err = informerSource(ctx, g, nodeName)
		if err != nil {
			if !filter.Empty() {
				cancel()
				return nil, fmt.Errorf("filters need the API server: %w", err)
			}
			fmt.Fprintf(g.Streams.ErrOut, "warning: %v; events carry no Kubernetes names\n", err)
		}
	}
	en := enrich.New(enrich.Options{Source: source, NodeName: nodeName, Logger: log})
	errOut := g.Streams.ErrOut
	return &traceRun{
		ctx: ctx, cancel: cancel,
		out: render.NewWriter(g.Streams.Out, format, columns),
		opts: gadget.Options{
			Enricher:  en,
			Filter:    filter,
			RingBytes: f.ringMiB << 20,
			Logger:    log,
			OnLost:    func(lost, missed uint64) { fmt.Fprintln(errOut, render.LostWarning(name, lost, missed)) },
		},
	}, nil
}

// filter builds the pod filter of -n, -p, -c and -l.
func (f *traceFlags) filter(g *Globals) (enrich.Filter, error) {
	filter := enrich.Filter{PodPrefix: f.pod, Container: f.container}
	if g.ConfigFlags.Namespace != nil {
		filter.Namespace = *g.ConfigFlags.Namespace
	}
	if f.selector != "" {
		sel, err := labels.Parse(f.selector)
		if err != nil {
			return filter, fmt.Errorf("-l %q: %w", f.selector, err)
		}
		filter.Selector = sel
	}
	return filter, nil
}

// localNodes are the nodes whose pods run in this machine's kernel:
// $NODE_NAME when set; else the host name, plus, when the API server is
// reachable (cs not nil), the nodes labelled with this machine's id
// (hostid.Label, set by the lab on the nodes it hosts).
func localNodes(ctx context.Context, cs kubernetes.Interface) []string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return []string{n}
	}
	var nodes []string
	if h, err := os.Hostname(); err == nil {
		nodes = append(nodes, strings.ToLower(h))
	}
	if cs == nil {
		return nodes
	}
	id, err := hostid.Get()
	if err != nil {
		return nodes
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: hostid.Label + "=" + id})
	if err != nil {
		return nodes
	}
	for _, n := range list.Items {
		if n.Labels[hostid.Label] == id && !slices.Contains(nodes, n.Name) {
			nodes = append(nodes, n.Name)
		}
	}
	return nodes
}

// runTrace picks local or cluster mode (remote.Decide) and runs the gadget.
func runTrace(cmd *cobra.Command, g *Globals, f *traceFlags, name string, local func(*cobra.Command, *Globals, *traceFlags) error) error {
	filter, err := f.filter(g)
	if err != nil {
		return err
	}
	var cs kubernetes.Interface
	if !f.noK8s {
		if cfg, err := g.ConfigFlags.ToRESTConfig(); err == nil {
			cs, _ = kubernetes.NewForConfig(cfg)
		}
	} else if f.allNodes {
		return fmt.Errorf("--all-nodes streams from the agents through the API server: it cannot be combined with --no-k8s")
	}
	// Deciding lists nodes or pods at most once; an unreachable API server
	// must not hold the command longer than local mode's informers would.
	dctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
	f.localNodes = localNodes(dctx, cs)
	plan, err := remote.Decide(dctx, cs, remote.PlanInput{
		LocalNodes: f.localNodes, Nodes: f.nodes, AllNodes: f.allNodes, Local: f.local, Filter: filter})
	cancel()
	if err != nil {
		return err
	}
	if !plan.Cluster {
		return local(cmd, g, f)
	}
	return runTraceCluster(cmd, g, f, name, filter, cs, plan)
}

// runTraceCluster streams the gadget from the agents of plan.Nodes.
func runTraceCluster(cmd *cobra.Command, g *Globals, f *traceFlags, name string, filter enrich.Filter, cs kubernetes.Interface, plan remote.Plan) error {
	format, err := render.ParseFormat(f.output)
	if err != nil {
		return err
	}
	if f.ringMiB == 0 || f.ringMiB&(f.ringMiB-1) != 0 || f.ringMiB > 32 {
		return fmt.Errorf("--ring-mib %d: must be a power of two, at most 32 in cluster mode (the agents' memory)", f.ringMiB)
	}
	params := wire.Params{Namespace: filter.Namespace, PodPrefix: f.pod, Container: f.container, Selector: f.selector,
		Duration: f.duration, RingMiB: f.ringMiB}
	switch name {
	case wire.TCP:
		params.FailuresOnly = f.failuresOnly
	case wire.DNS:
		params.DNSTimeout = f.dnsTimeout
		for _, p := range f.dnsPorts {
			if p == 0 || p > 65535 {
				return fmt.Errorf("--ports: %d is not a port", p)
			}
			params.DNSPorts = append(params.DNSPorts, uint16(p))
		}
	}
	write, err := remote.Writer(name, format, g.Streams.Out)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errOut := g.Streams.ErrOut
	fmt.Fprintf(errOut, "%s: cluster mode (%s)\n", name, plan.Reason)
	res, runErr := remote.Run(ctx, remote.Options{
		Agents: agentclient.New(cs, agentclient.Options{}), Gadget: name, Params: params, Nodes: plan.Nodes,
		Event: write, Notice: func(msg string) { fmt.Fprintln(errOut, msg) },
	})
	for _, line := range res.Summary(name) {
		fmt.Fprintln(errOut, line)
	}
	return runErr
}

func informerSource(ctx context.Context, g *Globals, nodeName string) (enrich.Source, error) {
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes access (%v)", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes access (%v)", err)
	}
	src, err := enrich.NewInformerSource(ctx, cs, enrich.InformerOptions{NodeName: nodeName, ResolveRemote: true, SyncTimeout: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	return src, nil
}

func (r *traceRun) finish(g *Globals, name string, st gadget.Stats, runErr error) error {
	r.cancel()
	fmt.Fprintln(g.Streams.ErrOut, render.Summary(name, st))
	return runErr
}

func runTraceTCP(cmd *cobra.Command, g *Globals, f *traceFlags) error {
	r, err := f.setup(cmd, g, "tcp", render.TCPColumns())
	if err != nil {
		return err
	}
	defer r.cancel()
	t, err := tcp.New(tcp.Options{Options: r.opts, FailuresOnly: f.failuresOnly})
	if err != nil {
		return err
	}
	defer t.Close()
	var werr error
	st, err := t.Run(r.ctx, func(ev tcp.Event) {
		if werr == nil {
			werr = r.out.TCP(ev)
		}
	})
	if err == nil {
		err = werr
	}
	return r.finish(g, "tcp", st, err)
}

func runTraceDNS(cmd *cobra.Command, g *Globals, f *traceFlags) error {
	var ports []uint16
	for _, p := range f.dnsPorts {
		if p == 0 || p > 65535 {
			return fmt.Errorf("--ports: %d is not a port", p)
		}
		ports = append(ports, uint16(p))
	}
	r, err := f.setup(cmd, g, "dns", render.DNSColumns())
	if err != nil {
		return err
	}
	defer r.cancel()
	t, err := dns.New(dns.Options{Options: r.opts, Timeout: f.dnsTimeout, Ports: ports})
	if err != nil {
		return err
	}
	defer t.Close()
	var werr error
	st, err := t.Run(r.ctx, func(ev dns.Event) {
		if werr == nil {
			werr = r.out.DNS(ev)
		}
	})
	if err == nil {
		err = werr
	}
	return r.finish(g, "dns", st, err)
}

func runTraceOOMKill(cmd *cobra.Command, g *Globals, f *traceFlags) error {
	r, err := f.setup(cmd, g, "oomkill", render.OOMKillColumns())
	if err != nil {
		return err
	}
	defer r.cancel()
	t, err := oomkill.New(oomkill.Options{Options: r.opts})
	if err != nil {
		return err
	}
	defer t.Close()
	var werr error
	st, err := t.Run(r.ctx, func(ev oomkill.Event) {
		if werr == nil {
			werr = r.out.OOMKill(ev)
		}
	})
	if err == nil {
		err = werr
	}
	return r.finish(g, "oomkill", st, err)
}
