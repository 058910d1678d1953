package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kdiag/kdiag/pkg/agent"
	gadgetserver "github.com/kdiag/kdiag/pkg/gadget/server"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

type agentFlags struct {
	node, listen, procPressure       string
	configs, npdConfigs, cgroupRoots []string
	heartbeat, psiInterval           time.Duration
	noPSI                            bool
	psi                              psi.Threshold
	noDisk                           bool
	disk                             disk.Options
	diag                             diagnose.Options
	reportInterval                   time.Duration
}

func newAgentCommand(g *Globals) *cobra.Command {
	f := &agentFlags{psi: psi.DefaultThreshold()}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: NPD-format problem detection, PSI, node conditions, events and metrics",
		Long: `agent runs on a node (as a DaemonSet, or as a plain process with --node) and
watches it:

  log monitors   Node Problem Detector system-log-monitor configs, unchanged
                 (kmsg, filelog, journald); built-in kernel, readonly and systemd
                 monitors when no --config is given. Permanent conditions clear
                 by a recovery pattern or an expiry (see docs/config/npd-monitors.md).
  PSI            /proc/pressure: MemoryContentionPressure and IOContentionPressure
                 with hysteresis; every value (and per-pod cgroup v2 pressure) as a metric.
  exporter       node conditions as one merge patch of nodes/status per change plus
                 a heartbeat; Events on the Node, and OOM kills on the victim's Pod.
  disk           usage of the kubelet, runtime and log filesystems; DiskUsageHigh
                 with hysteresis and a bounded walk for the top consumers.
  diagnose       GET /diagnose returns the NotReady diagnostic (JSON, ?format=text);
                 when the node degrades one is stored in ConfigMap
                 kube-system/kdiag-node-report-<node>.

A restart resumes from the conditions on the Node. A config, log source or PSI
that cannot be read is reported (log and /healthz) and the rest keeps running.
See docs/commands/agent.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.node, "node", os.Getenv("NODE_NAME"), "name of the Node this agent watches (default $NODE_NAME)")
	fl.StringArrayVar(&f.configs, "config", nil, "NPD system-log-monitor config file (repeatable; default: the built-in monitors)")
	fl.StringSliceVar(&f.npdConfigs, "config.system-log-monitor", nil, "NPD's flag: comma-separated system-log-monitor config files (same as --config)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:20257", `address of /metrics, /healthz and /diagnose ("" to disable)`)
	fl.DurationVar(&f.heartbeat, "heartbeat", 5*time.Minute, "re-patch the node conditions this often when nothing changes")
	fl.BoolVar(&f.noPSI, "no-psi", false, "do not read pressure stall information")
	fl.StringVar(&f.procPressure, "proc-pressure", "/proc/pressure", "directory of the node's PSI files")
	fl.StringArrayVar(&f.cgroupRoots, "cgroup-root", []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}, "cgroup v2 mount points to search for pod cgroups, for per-pod pressure (repeatable)")
	fl.DurationVar(&f.psiInterval, "psi-interval", 10*time.Second, "how often to read PSI")
	fl.Float64Var(&f.psi.SetAvg10, "psi-set-avg10", f.psi.SetAvg10, "set a pressure condition when some avg10 reaches this percentage")
	fl.Float64Var(&f.psi.SetAvg60, "psi-set-avg60", f.psi.SetAvg60, "... or when some avg60 reaches this percentage")
	fl.Float64Var(&f.psi.ClearAvg10, "psi-clear-avg10", f.psi.ClearAvg10, "clear it only when some avg10 is below this percentage")
	fl.Float64Var(&f.psi.ClearAvg60, "psi-clear-avg60", f.psi.ClearAvg60, "... and some avg60 is below this percentage")
	addDiskDiagnoseFlags(fl, f)
	return cmd
}

// addDiskDiagnoseFlags registers the disk monitor's and the NotReady
// diagnostic's flags (docs/commands/agent.md).
func addDiskDiagnoseFlags(fl *pflag.FlagSet, f *agentFlags) {
	lim := disk.DefaultLimits()
	f.disk = disk.Options{SetPercent: disk.DefaultSetPercent, ClearPercent: disk.DefaultClearPercent, Limits: lim}
	fl.BoolVar(&f.noDisk, "no-disk", false, "do not watch disk usage")
	fl.StringArrayVar(&f.disk.Paths, "disk-path", disk.DefaultPaths(), "directory whose filesystem is watched (repeatable; filesystems are deduplicated)")
	fl.DurationVar(&f.disk.Interval, "disk-interval", time.Minute, "how often to read disk usage")
	fl.Float64Var(&f.disk.SetPercent, "disk-threshold", f.disk.SetPercent, "set DiskUsageHigh and walk for top consumers when bytes or inodes used reach this percentage")
	fl.Float64Var(&f.disk.ClearPercent, "disk-clear-threshold", f.disk.ClearPercent, "clear DiskUsageHigh only when both are below this percentage")
	fl.IntVar(&f.disk.Limits.MaxEntries, "disk-walk-max-entries", lim.MaxEntries, "top-consumer walk: most directory entries looked at")
	fl.IntVar(&f.disk.Limits.MaxDepth, "disk-walk-max-depth", lim.MaxDepth, "top-consumer walk: deepest level entered below a watched path")
	fl.DurationVar(&f.disk.Limits.MaxDuration, "disk-walk-max-duration", lim.MaxDuration, "top-consumer walk: longest time")
	d := &f.diag
	fl.StringVar(&d.ProcDir, "proc", "/proc", "the host's /proc: kubelet and runtime processes, and PID 1's default route")
	fl.StringVar(&d.MemoryV1Root, "cgroup-v1-memory", "/sys/fs/cgroup/memory", "cgroup v1 memory hierarchy (pod memory when cgroup v2 has no memory controller)")
	fl.StringVar(&d.CPUAcctV1Root, "cgroup-v1-cpuacct", "/sys/fs/cgroup/cpuacct", "cgroup v1 cpuacct hierarchy (pod CPU when cgroup v2 has no pod cgroups)")
	fl.StringVar(&d.KubeletHealthz, "kubelet-healthz", diagnose.DefaultKubeletHealthz, `kubelet health URL ("" to skip)`)
	fl.StringSliceVar(&d.KubeletProcesses, "kubelet-process", []string{"kubelet"}, "command names of the kubelet in /proc")
	fl.StringVar(&d.RuntimeName, "runtime", "containerd", "container runtime name")
	fl.StringVar(&d.RuntimeHealthz, "runtime-healthz", "", "container runtime health URL (containerd has none over HTTP)")
	fl.StringSliceVar(&d.RuntimeProcesses, "runtime-process", nil, "command names of the container runtime in /proc (default: the --runtime name)")
	fl.StringVar(&d.DNSServer, "cluster-dns", "", "host:port of the cluster DNS (default: Service kube-system/kube-dns, port 53)")
	fl.StringVar(&d.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain")
	fl.DurationVar(&d.ProbeTimeout, "probe-timeout", 3*time.Second, "timeout of each diagnostic probe (API server, DNS, healthz)")
	fl.DurationVar(&d.CPUWindow, "diagnose-cpu-window", time.Second, "how long the diagnostic samples pod CPU")
	fl.DurationVar(&f.reportInterval, "report-interval", agent.DefaultReportInterval, "least time between two diagnostics recorded when the node degrades (negative: never)")
}

func runAgent(ctx context.Context, g *Globals, f *agentFlags) error {
	if f.node == "" {
		return errors.New("agent: --node is required (in a DaemonSet, set NODE_NAME from spec.nodeName)")
	}
	if err := f.psi.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := f.disk.Validate(); err != nil && !f.noDisk {
		return fmt.Errorf("agent: %w", err)
	}
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("agent: API server configuration: %w", err)
	}
	// The trace gadgets, for kdiag trace in cluster mode (docs/commands/trace.md).
	gadgets := gadgetserver.New(gadgetserver.Options{Node: f.node, NewSource: gadgetserver.KubernetesSource(cfg, f.node, g.Logger()),
		ProcRoot: f.diag.ProcDir, Cgroup2Roots: f.cgroupRoots, Logger: g.Logger()})
	defer gadgets.Close()
	a, err := agent.New(agent.Options{
		Node: f.node, RESTConfig: cfg, ConfigFiles: append(append([]string{}, f.configs...), f.npdConfigs...),
		Listen: f.listen, Heartbeat: f.heartbeat, DisablePSI: f.noPSI, Logger: g.Logger(),
		PSI:      psi.Options{ProcDir: f.procPressure, CgroupRoots: f.cgroupRoots, Interval: f.psiInterval, Memory: f.psi, IO: f.psi},
		Handlers: map[string]http.Handler{wire.PathPrefix: gadgets},
		Disk:     f.disk, DisableDisk: f.noDisk, Diagnose: f.diag, ReportInterval: f.reportInterval,
	})
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := a.Addr(); addr != "" {
		fmt.Fprintf(g.Streams.ErrOut, "kdiag agent: node %s, /metrics, /healthz and /diagnose on http://%s\n", f.node, addr)
	}
	return a.Run(ctx)
}
