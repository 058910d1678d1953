package diagnose

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// PodResolver names a pod of this node from its UID (the agent's pod cache).
type PodResolver interface {
	PodByUID(uid string) (*corev1.Pod, bool)
}

// DiskSource is the disk monitor's latest state (disk.Monitor).
type DiskSource interface {
	Latest() ([]disk.Filesystem, []string)
	Scans() []disk.Scan
}

// Options configure a Diagnoser. Zero fields take the defaults shown.
type Options struct {
	// Node is the node's name.
	Node string
	// Client reaches the API server (the API server probe, the kube-dns
	// Service); nil skips both and records why.
	Client kubernetes.Interface
	// APIServerHost labels the API server probe (the client's host).
	APIServerHost string
	// ProcPressure is the node PSI directory (/proc/pressure).
	ProcPressure string
	// ProcDir is the host's /proc: processes, and PID 1's routes (/proc).
	ProcDir string
	// CgroupV2Roots are searched for kubepods (/sys/fs/cgroup, /sys/fs/cgroup/unified).
	CgroupV2Roots []string
	// MemoryV1Root and CPUAcctV1Root are the cgroup v1 memory and cpuacct
	// hierarchies (/sys/fs/cgroup/memory, /sys/fs/cgroup/cpuacct), used
	// when the v2 pod cgroups lack memory or CPU files.
	MemoryV1Root, CPUAcctV1Root string
	// CPUWindow is how long pod CPU is sampled (1s).
	CPUWindow time.Duration
	// TopPods is how many pods are listed by CPU and by memory (5).
	TopPods int
	// Pods names pods from their UIDs; nil leaves UIDs only.
	Pods PodResolver
	// DiskPaths are the watched directories (disk.DefaultPaths) and
	// DiskThresholdPercent the usage at which one counts as full (85).
	DiskPaths            []string
	DiskThresholdPercent float64
	// Disk is the disk monitor; without it, or when it has no walk of a
	// filesystem yet, the report walks that filesystem with DiskLimits.
	Disk DiskSource
	// DiskLimits bound that walk (MaxDuration 3s, the rest disk.DefaultLimits).
	DiskLimits disk.Limits
	// WalkReuse is how long such a walk is reused by later reports (5m), so
	// that repeated requests do not repeat the disk I/O.
	WalkReuse time.Duration
	// DNSServer is host:port of the cluster DNS; "" uses the cluster IP of
	// Service kube-system/kube-dns, port 53.
	DNSServer string
	// ClusterDomain is the cluster's DNS domain (cluster.local).
	ClusterDomain string
	// KubeletHealthz is the kubelet's health URL (http://127.0.0.1:10248/healthz; "" skips it).
	KubeletHealthz string
	// KubeletProcesses are the kubelet's command names ([kubelet]).
	KubeletProcesses []string
	// RuntimeName names the container runtime (containerd), RuntimeHealthz
	// is its health URL ("" by default: containerd has none over HTTP) and
	// RuntimeProcesses its command names ([containerd]).
	RuntimeName      string
	RuntimeHealthz   string
	RuntimeProcesses []string
	// ProbeTimeout bounds each network and health probe (3s).
	ProbeTimeout time.Duration
}

func (o Options) withDefaults() Options {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.ProcPressure, "/proc/pressure")
	def(&o.ProcDir, "/proc")
	def(&o.MemoryV1Root, "/sys/fs/cgroup/memory")
	def(&o.CPUAcctV1Root, "/sys/fs/cgroup/cpuacct")
	def(&o.ClusterDomain, "cluster.local")
	def(&o.RuntimeName, "containerd")
	if o.CgroupV2Roots == nil {
		o.CgroupV2Roots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}
	}
	if o.CPUWindow <= 0 {
		o.CPUWindow = time.Second
	}
	if o.TopPods <= 0 {
		o.TopPods = 5
	}
	if len(o.DiskPaths) == 0 {
		o.DiskPaths = disk.DefaultPaths()
	}
	if o.DiskThresholdPercent <= 0 {
		o.DiskThresholdPercent = disk.DefaultSetPercent
	}
	if o.DiskLimits.MaxDuration <= 0 {
		o.DiskLimits.MaxDuration = 3 * time.Second
	}
	if o.KubeletProcesses == nil {
		o.KubeletProcesses = []string{"kubelet"}
	}
	if o.RuntimeProcesses == nil {
		o.RuntimeProcesses = []string{o.RuntimeName}
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 3 * time.Second
	}
	if o.WalkReuse <= 0 {
		o.WalkReuse = 5 * time.Minute
	}
	return o
}

// DefaultKubeletHealthz is the kubelet's default healthz endpoint.
const DefaultKubeletHealthz = "http://127.0.0.1:10248/healthz"

// Diagnoser takes reports.
type Diagnoser struct {
	opts Options
	http *http.Client
	// one report at a time: a report samples CPU for a second and may walk a disk.
	mu    sync.Mutex
	walks map[uint64]disk.Scan // by device, taken by reports (under mu)
}

// New returns a Diagnoser.
func New(opts Options) *Diagnoser {
	return &Diagnoser{opts: opts.withDefaults(), http: &http.Client{}, walks: map[uint64]disk.Scan{}}
}

// Options returns the options with defaults applied.
func (d *Diagnoser) Options() Options { return d.opts }

// Diagnose takes a report. Its sections are gathered concurrently; each
// records what it could not read and the others go on. trigger says why
// the report is taken.
func (d *Diagnoser) Diagnose(ctx context.Context, trigger string) *Report {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	r := &Report{Node: d.opts.Node, Time: start.UTC(), Trigger: trigger}
	var wg sync.WaitGroup
	wg.Go(func() { r.Pressure = d.pressure(ctx) })
	wg.Go(func() { r.Disk = d.disk(ctx) })
	wg.Go(func() { r.Network = d.network(ctx) })
	wg.Go(func() { r.Health = d.health(ctx) })
	wg.Wait()
	r.Duration = time.Since(start)
	Decide(r)
	return r
}

// disk fills the disk section from the monitor, or reads it now; a
// filesystem without a walk from the monitor is walked now, within
// opts.DiskLimits (or the walk of an earlier report within opts.WalkReuse
// is reused), so that the report always names the top consumers.
func (d *Diagnoser) disk(ctx context.Context) Disk {
	sec := Disk{ThresholdPercent: d.opts.DiskThresholdPercent}
	var fss []disk.Filesystem
	var errs []string
	if d.opts.Disk != nil {
		fss, errs = d.opts.Disk.Latest()
		sec.Scans = d.opts.Disk.Scans()
	}
	if len(fss) == 0 && len(errs) == 0 {
		var es []error
		fss, es = disk.Usage(d.opts.DiskPaths)
		for _, e := range es {
			errs = append(errs, e.Error())
		}
	}
	sec.Filesystems, sec.Errors = fss, errs
	for _, fs := range fss {
		walked := false
		for _, s := range sec.Scans {
			walked = walked || (len(s.Paths) > 0 && contains(fs.Paths, s.Paths[0]))
		}
		if walked {
			continue
		}
		s, ok := d.walks[fs.Device]
		if !ok || time.Since(s.Time) > d.opts.WalkReuse {
			s = disk.Walk(ctx, fs, d.opts.DiskLimits)
			d.walks[fs.Device] = s
		}
		sec.Scans = append(sec.Scans, s)
	}
	if len(fss) == 0 && len(sec.Errors) == 0 {
		sec.Errors = append(sec.Errors, fmt.Sprintf("no filesystem read from %v", d.opts.DiskPaths))
	}
	return sec
}
