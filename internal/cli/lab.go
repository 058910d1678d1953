package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/programs"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
	"github.com/kdiag/kdiag/pkg/lab/scenario"
	"github.com/kdiag/kdiag/pkg/ops"
)

// kubeletProcess names the simulated kubelet's process and log file.
const kubeletProcess = "kubelet"

// labFlags are the flags shared by the lab subcommands.
type labFlags struct {
	dir      string
	binDir   string
	toolsDir string
}

func (f *labFlags) addDir(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dir, "dir", lab.DefaultDir(), "directory holding the lab's state, certificates, etcd data and logs")
}

func (f *labFlags) addBinaries(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.binDir, "bin-dir", "", "directory of the control-plane binaries (default $"+binaries.EnvBinDir+" or <user cache>/kdiag/k8s-"+binaries.KubernetesVersion+"/bin)")
	cmd.Flags().StringVar(&f.toolsDir, "tools-dir", "", "the tools/k8s module (or a kdiag checkout) to build the binaries from (default: search upwards from the working directory)")
}

func (f *labFlags) binaries(g *Globals) binaries.Options {
	return binaries.Options{BinDir: f.binDir, ToolsDir: f.toolsDir, Progress: g.Streams.ErrOut, Logger: g.Logger()}
}

func newLabCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a real local control plane with simulated nodes and the seed scenarios",
		Long: `The lab runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(Kubernetes ` + binaries.KubernetesVersion + `) on loopback, plus a simulated kubelet for N nodes,
so that kdiag can be tried without a cluster. See docs/commands/lab.md.`,
	}
	cmd.AddCommand(newLabUpCommand(g), newLabDownCommand(g), newLabStatusCommand(g), newLabBuildCommand(g), newLabLoadCommand(g), newLabKubeletCommand(g), newLabProgramCommand(g))
	return cmd
}

func newLabUpCommand(g *Globals) *cobra.Command {
	var (
		f       labFlags
		nodes   int
		scen    string
		pods    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a lab in the background and print the KUBECONFIG to use",
		Example: `  eval "$(kdiag lab up --nodes 3)"
  kdiag lab up --dir /tmp/lab2 --scenario NAME   # NAME: ` + strings.Join(scenario.Names(), ", "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 0 {
				return fmt.Errorf("--nodes must be 0 or more, got %d", nodes)
			}
			if scen != "" && !slices.Contains(scenario.Names(), scen) {
				return fmt.Errorf("unknown scenario %q; known: %s", scen, strings.Join(scenario.Names(), ", "))
			}
			mode, err := lab.ParsePodsMode(pods)
			if err != nil {
				return err
			}
			if mode == lab.PodsReal && nodes == 0 {
				return errors.New("--pods=real needs --nodes > 0: real pods run on the simulated nodes")
			}
			switch {
			case nodes == 0:
				mode = lab.PodsSimulated
			case mode == lab.PodsAuto && nodes > autoRealMaxNodes:
				// A load-test lab: kube-proxy syncing thousands of Services
				// would cost more than the lab itself.
				fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: pods are simulated: more than %d nodes (use --pods=real to run them anyway)\n", autoRealMaxNodes)
				mode = lab.PodsSimulated
			}
			dir, err := filepath.Abs(f.dir)
			if err != nil {
				return fmt.Errorf("resolve --dir: %w", err)
			}
			var extra, nodeExtra []lab.Command
			if nodes > 0 {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("locate the kdiag binary for the simulated kubelet: %w", err)
				}
				extra = append(extra, lab.Command{Name: kubeletProcess, Path: exe, Args: []string{
					"lab", "kubelet", "--dir", dir, "--nodes", strconv.Itoa(nodes), "--log-level", "info",
				}})
				// The node's DNS resolver, which CoreDNS forwards to: the
				// upstream-dns program in the node network (real mode only).
				nodeExtra = append(nodeExtra, lab.Command{Name: upstreamDNSProcess, Path: exe,
					Args: append([]string{"lab", "program", programs.UpstreamDNS}, programs.UpstreamArgs(dir)...)})
			}
			ctx := cmd.Context()
			c, err := lab.Start(ctx, lab.Options{
				Dir:          dir,
				Detached:     true,
				Binaries:     f.binaries(g),
				Extra:        extra,
				Pods:         mode,
				NodeAddrs:    []netip.Addr{netip.MustParseAddr(programs.NodeDNSAddr)},
				NodeExtra:    nodeExtra,
				ReadyTimeout: timeout,
				Progress:     g.Streams.ErrOut,
				Logger:       g.Logger(),
			})
			if err != nil {
				return err
			}
			if nodes > 0 {
				if err := lab.WaitForNodes(ctx, c.RESTConfig(), nodes, timeout); err != nil {
					return fmt.Errorf("%w; the lab keeps running, see %s/logs/%s.log or stop it with `kdiag lab down --dir %s`", err, c.Dir(), kubeletProcess, c.Dir())
				}
				fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: %d simulated nodes Ready\n", nodes)
			}
			// The lab is where kdiag's own objects are tried: install the
			// Operation CRD so that drain runs, repairs and fixes are
			// recorded and `kdiag ops` reads them.
			if err := ops.EnsureCRD(ctx, c.RESTConfig()); err != nil {
				return fmt.Errorf("install the Operation CRD: %w; the lab keeps running, stop it with `kdiag lab down --dir %s`", err, c.Dir())
			}
			if scen != "" {
				if err := scenario.ApplyWith(ctx, c.RESTConfig(), scen, scenario.Options{RealPods: c.DataPlane() != nil, Dir: c.Dir()}); err != nil {
					return fmt.Errorf("apply scenario %q: %w; the lab keeps running, stop it with `kdiag lab down --dir %s`", scen, err, c.Dir())
				}
				fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: scenario %q applied\n", scen)
			}
			if c.DataPlane() != nil {
				fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: pods with kdiag.io/lab/* and CoreDNS images run for real in node network %s\n", c.DataPlane().Network.Netns)
			}
			fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: running in %s; stop it with `kdiag lab down --dir %s`\n", c.Dir(), c.Dir())
			fmt.Fprintf(g.Streams.Out, "export KUBECONFIG=%s\n", c.KubeconfigPath())
			return nil
		},
	}
	f.addDir(cmd)
	f.addBinaries(cmd)
	cmd.Flags().IntVar(&nodes, "nodes", kubelet.DefaultNodes, "number of simulated nodes (0: none)")
	cmd.Flags().StringVar(&scen, "scenario", "", "scenario to apply once the lab is ready: "+strings.Join(scenario.Names(), ", "))
	cmd.Flags().StringVar(&pods, "pods", string(lab.PodsAuto), "run pods as real processes: auto (when root and the kernel allows), real, or simulated (status only, cheap)")
	cmd.Flags().DurationVar(&timeout, "timeout", lab.DefaultReadyTimeout, "how long to wait for each component (and for the nodes) to become ready")
	return cmd
}

func newLabDownCommand(g *Globals) *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop every process of a lab (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lab.Down(cmd.Context(), f.dir); err != nil {
				return err
			}
			fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: stopped; no lab process runs in %s any more\n", f.dir)
			return nil
		},
	}
	f.addDir(cmd)
	return cmd
}

func newLabStatusCommand(g *Globals) *cobra.Command {
	var (
		f      labFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the processes of a lab and whether they run",
		Long:  "Show the processes of a lab. Exits 1 when some process of the lab is not running, 2 when there is no lab in the directory.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, got %q", output)
			}
			st, err := lab.ReadStatus(f.dir)
			if errors.Is(err, lab.ErrNoLab) {
				return &ExitError{Code: 2, Err: fmt.Errorf("%w; start one with `kdiag lab up --dir %s`", err, f.dir)}
			}
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(g.Streams.Out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return fmt.Errorf("write status: %w", err)
				}
			} else {
				fmt.Fprintf(g.Streams.Out, "dir:        %s\nkubeconfig: %s\nserver:     %s\nstarted:    %s\n", st.Dir, st.Kubeconfig, st.Server, st.StartedAt.Local().Format(time.RFC3339))
				if d := st.DataPlane; d != nil {
					fmt.Fprintf(g.Streams.Out, "pods:       real, node network %s (host link %s, %s), cgroups %s\n", d.Network.Netns, d.Network.HostLink, d.Network.HostAddr, d.CgroupParent)
				} else {
					fmt.Fprintf(g.Streams.Out, "pods:       simulated\n")
				}
				fmt.Fprintln(g.Streams.Out)
				tw := tabwriter.NewWriter(g.Streams.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPID\tSTATE\tLOG")
				for _, p := range st.Processes {
					state := "running"
					if !p.Running {
						state = "stopped"
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Name, p.PID, state, p.LogFile)
				}
				if err := tw.Flush(); err != nil {
					return fmt.Errorf("write status: %w", err)
				}
			}
			if !st.Running() {
				return &ExitError{Code: 1, Err: fmt.Errorf("the lab in %s is not running completely; `kdiag lab down --dir %s` cleans up", st.Dir, st.Dir)}
			}
			return nil
		},
	}
	f.addDir(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newLabBuildCommand(g *Globals) *cobra.Command {
	var (
		f     labFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the pinned control-plane binaries into the cache (a cold build takes ~10-15 minutes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := f.binaries(g)
			o.Force = force
			set, err := binaries.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Streams.Out, set.Dir)
			return nil
		},
	}
	f.addBinaries(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "rebuild even when the cached binaries match the pins")
	return cmd
}

// autoRealMaxNodes is the most nodes for which --pods=auto runs real pods.
const autoRealMaxNodes = 50

// upstreamDNSProcess names the node resolver's process and log file.
const upstreamDNSProcess = "upstream-dns"

// labResolver is what runs for real in a lab in real mode: the built-in
// programs (kdiag.io/lab/...) and CoreDNS images, with the lab's cluster
// DNS (the tenth address of the service range, kubeadm's convention) and
// the node resolver (the upstream-dns program on the node network).
func labResolver(st *lab.State, admin *rest.Config) (runtime.Resolver, error) {
	l := lab.Layout{Dir: st.Dir}
	ca, err := os.ReadFile(l.CA())
	if err != nil {
		return nil, fmt.Errorf("read the lab CA: %w", err)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("client for CoreDNS tokens: %w", err)
	}
	return runtime.Chain(
		programs.Resolver("", programs.ResolverOptions{ClusterDNS: lab.ClusterDNSIP, NodeDNS: programs.NodeDNSAddr}),
		programs.CoreDNSResolver(programs.CoreDNSOptions{
			Binary:    filepath.Join(st.BinDir, binaries.CoreDNS),
			Dir:       l.Pods(),
			APIServer: st.DataPlane.APIServerURL(st.Ports.APIServer),
			CAData:    ca,
			Client:    cs,
			NodeDNS:   programs.NodeDNSAddr,
		}),
	), nil
}

// newLabKubeletCommand is the simulated kubelet that `lab up` runs as a
// detached child of its own binary.
func newLabKubeletCommand(g *Globals) *cobra.Command {
	var (
		f     labFlags
		nodes int
	)
	cmd := &cobra.Command{
		Use:    "kubelet",
		Short:  "Run the simulated kubelet of a lab (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := lab.AdminConfig(f.dir)
			if err != nil {
				return err
			}
			opts := kubelet.Options{Nodes: nodes, Logger: g.Logger()}
			st, err := lab.ReadState(f.dir)
			if err != nil {
				return err
			}
			if st.DataPlane != nil {
				resolver, err := labResolver(st, cfg)
				if err != nil {
					return err
				}
				opts.Real = &kubelet.RealPods{Dir: st.Dir, Resolver: resolver}
			}
			err = kubelet.Run(cmd.Context(), cfg, opts)
			if err != nil && cmd.Context().Err() != nil {
				return nil // stopped by SIGTERM from lab down
			}
			return err
		},
	}
	f.addDir(cmd)
	cmd.Flags().IntVar(&nodes, "nodes", kubelet.DefaultNodes, "number of simulated nodes")
	return cmd
}
