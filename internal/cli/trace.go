package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
)

type traceFlags struct {
	pod, container, selector, node, output string
	duration                               time.Duration
	noK8s                                  bool
	ringMiB                                uint32

	failuresOnly bool
	dnsTimeout   time.Duration
	dnsPorts     []uint
}

func newTraceCommand(g *Globals) *cobra.Command {
	f := &traceFlags{}
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Trace TCP, DNS and OOM kills on this node with eBPF, labelled with Kubernetes names",
		Long: `trace runs an eBPF gadget on the node it runs on (as root) and streams its events,
labelled with node, namespace, pod and container, and with IP addresses named as
pod/ns/name or svc/ns/name. Filters (-n, -p, -c, -l) are applied in the kernel where
possible. Events lost because the reader could not keep up are counted and reported.

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
	pf.StringVar(&f.node, "node", "", "node to trace; local mode traces only the node it runs on (default $NODE_NAME or the host name)")
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runTraceTCP(cmd, g, f) },
	}
	tcpCmd.Flags().BoolVar(&f.failuresOnly, "failures-only", false, "only failed connects, closes with an error, RSTs and retransmits")

	dnsCmd := &cobra.Command{
		Use:   "dns",
		Short: "Trace DNS queries and responses, and queries never answered",
		Example: `  kdiag trace dns -n shop
  kdiag trace dns -n kube-system -p coredns --timeout 5s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTraceDNS(cmd, g, f) },
	}
	dnsCmd.Flags().DurationVar(&f.dnsTimeout, "timeout", 2*time.Second, "report a query as unanswered after this long")
	dnsCmd.Flags().UintSliceVar(&f.dnsPorts, "ports", []uint{53}, "UDP/TCP ports that carry DNS (comma-separated)")

	oomCmd := &cobra.Command{
		Use:     "oomkill",
		Short:   "Trace OOM kills: victim, trigger, pages and the memory cgroup's pod and container",
		Example: `  kdiag trace oomkill -o json`,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runTraceOOMKill(cmd, g, f) },
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
	filter := enrich.Filter{PodPrefix: f.pod, Container: f.container, Node: f.node}
	if g.ConfigFlags.Namespace != nil {
		filter.Namespace = *g.ConfigFlags.Namespace
	}
	if f.selector != "" {
		sel, err := labels.Parse(f.selector)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("-l %q: %w", f.selector, err)
		}
		filter.Selector = sel
	}
	nodeName := os.Getenv("NODE_NAME")
	if nodeName == "" {
		if h, err := os.Hostname(); err == nil {
			nodeName = strings.ToLower(h)
		}
	}
	if f.node != "" && nodeName != "" && f.node != nodeName {
		cancel()
		return nil, fmt.Errorf("--node %s: this is node %s; local tracing sees only its own node (set NODE_NAME if the host name is not the node name)", f.node, nodeName)
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
