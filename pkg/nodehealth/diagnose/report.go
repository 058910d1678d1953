// Package diagnose builds the NotReady diagnostic of a node: pressure (PSI
// and the top pods by CPU and memory from cgroups), disk (usage and top
// consumers), network (default route, API server, cluster DNS) and the
// health of the kubelet and container runtime, ending in a one-line verdict
// that names the most likely culprit. A report is rendered as text or JSON
// and stored in the cluster as a ConfigMap that doctor and the repair
// controller read after the node has recovered.
package diagnose

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// Where reports are stored.
const (
	// Namespace holds the report ConfigMaps.
	Namespace = "kube-system"
	// NamePrefix starts every report ConfigMap's name; ConfigMapName adds the node.
	NamePrefix = "kdiag-node-report-"
	// Label marks report ConfigMaps (value "true").
	Label = "kdiag.io/node-report"
	// NodeLabel names the node of a report (names longer than a label value
	// are cut; the report's own node field is authoritative).
	NodeLabel = "kdiag.io/node"
	// DataKey is the ConfigMap data key holding the report as JSON.
	DataKey = "report.json"
)

// ConfigMapName returns the name of the ConfigMap holding node's latest report.
func ConfigMapName(node string) string { return NamePrefix + node }

// Culprit names what a verdict blames.
type Culprit string

// The culprits a verdict can name, in the order the rules try them (see
// docs/config/node-report.md).
const (
	CulpritKubelet Culprit = "kubelet"
	CulpritRuntime Culprit = "container-runtime"
	CulpritNetwork Culprit = "network"
	CulpritDisk    Culprit = "disk"
	CulpritMemory  Culprit = "memory"
	CulpritIO      Culprit = "io"
	CulpritCPU     Culprit = "cpu"
	CulpritDNS     Culprit = "dns"
	// CulpritNone: every section was read and nothing is wrong.
	CulpritNone Culprit = "none"
	// CulpritUnknown: nothing is wrong in what could be read, but some
	// sections recorded errors.
	CulpritUnknown Culprit = "unknown"
)

// Report is one NotReady diagnostic of a node.
type Report struct {
	// Node is the node the report is about.
	Node string `json:"node"`
	// Time is when the report was taken; Duration how long it took.
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration"`
	// Trigger says why it was taken: "request" (GET /diagnose) or the
	// degradation the agent saw, e.g. "Ready=False (KubeletNotReady)".
	Trigger string `json:"trigger"`
	// Pressure, Disk, Network and Health are the sections; each records
	// its own errors and is filled as far as it could be read.
	Pressure Pressure `json:"pressure"`
	Disk     Disk     `json:"disk"`
	Network  Network  `json:"network"`
	Health   Health   `json:"health"`
	// Verdict names the most likely culprit in one line.
	Verdict Verdict `json:"verdict"`
}

// Verdict is the report's conclusion.
type Verdict struct {
	// Culprit is what is most likely at fault.
	Culprit Culprit `json:"culprit"`
	// Summary is one line naming the culprit and its evidence.
	Summary string `json:"summary"`
	// Rule names the rule that decided (docs/config/node-report.md).
	Rule string `json:"rule"`
}

// PSI is one resource's pressure stall averages, in percent.
type PSI struct {
	SomeAvg10  float64 `json:"someAvg10"`
	SomeAvg60  float64 `json:"someAvg60"`
	SomeAvg300 float64 `json:"someAvg300"`
	// Full* are absent for cpu on kernels before 5.13 (HasFull false).
	FullAvg10  float64 `json:"fullAvg10"`
	FullAvg60  float64 `json:"fullAvg60"`
	FullAvg300 float64 `json:"fullAvg300"`
	HasFull    bool    `json:"hasFull"`
}

// PodUsage is one pod's resource use read from its cgroup.
type PodUsage struct {
	// UID is the pod's UID from its cgroup directory; Namespace and Name
	// are filled when the agent knows the pod.
	UID       string `json:"uid"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// CPUCores is the CPU used over the sampling window, in cores.
	CPUCores float64 `json:"cpuCores"`
	// MemoryBytes is the working set: usage minus inactive file cache, as
	// the kubelet counts it for eviction.
	MemoryBytes int64 `json:"memoryBytes"`
}

// Pressure is the CPU, memory and I/O section.
type Pressure struct {
	// PSI maps cpu, memory and io to the node's pressure.
	PSI map[string]PSI `json:"psi,omitempty"`
	// CgroupVersion says where pod usage came from: "v1", "v2" or "hybrid"
	// (memory from v1, CPU from v2, as on hosts with the unified hierarchy
	// mounted next to v1 controllers).
	CgroupVersion string `json:"cgroupVersion,omitempty"`
	// Pods counts the pod cgroups found.
	Pods int `json:"pods"`
	// CPUWindow is the interval over which pod CPU was sampled.
	CPUWindow time.Duration `json:"cpuWindow"`
	// TopCPU and TopMemory are the pods using the most, largest first.
	TopCPU    []PodUsage `json:"topCPU,omitempty"`
	TopMemory []PodUsage `json:"topMemory,omitempty"`
	// Errors are what could not be read.
	Errors []string `json:"errors,omitempty"`
}

// Disk is the disk section.
type Disk struct {
	// Filesystems holds the usage of each filesystem with a watched path.
	Filesystems []disk.Filesystem `json:"filesystems,omitempty"`
	// ThresholdPercent is the usage at which a filesystem counts as full.
	ThresholdPercent float64 `json:"thresholdPercent"`
	// Scans are the latest top-consumer walks, one per filesystem walked.
	Scans []disk.Scan `json:"scans,omitempty"`
	// Errors are what could not be read.
	Errors []string `json:"errors,omitempty"`
}

// Route is the default route.
type Route struct {
	// Interface and Gateway of the default route ("" gateway: on-link).
	Interface string `json:"interface"`
	Gateway   string `json:"gateway,omitempty"`
	// Family is "ipv4" or "ipv6".
	Family string `json:"family"`
}

// Probe is one network or health probe.
type Probe struct {
	// Target is what was probed (a URL, or a DNS server and name).
	Target string `json:"target"`
	// OK is true when it answered as expected.
	OK bool `json:"ok"`
	// Latency is how long the probe took (also when it failed).
	Latency time.Duration `json:"latency"`
	// Detail is the answer (an HTTP status, DNS addresses).
	Detail string `json:"detail,omitempty"`
	// Error says why it failed.
	Error string `json:"error,omitempty"`
}

// Network is the network section.
type Network struct {
	// DefaultRoutes are the default routes of the node's network
	// namespace (none: the node cannot reach anything off-link).
	DefaultRoutes []Route `json:"defaultRoutes"`
	// APIServer is a GET of the API server's /readyz through the agent's client.
	APIServer *Probe `json:"apiServer,omitempty"`
	// DNS is the resolution of kubernetes.default through the cluster DNS
	// Service (kube-dns).
	DNS *Probe `json:"dns,omitempty"`
	// Errors are what could not be read or probed.
	Errors []string `json:"errors,omitempty"`
}

// Component is the health of the kubelet or the container runtime.
type Component struct {
	// Name is "kubelet" or the runtime's name.
	Name string `json:"name"`
	// Healthz is a GET of its health endpoint (nil when none is configured).
	Healthz *Probe `json:"healthz,omitempty"`
	// Processes are the PIDs of its processes found in /proc.
	Processes []int `json:"processes"`
	// ProcessNames are the command names searched for.
	ProcessNames []string `json:"processNames"`
	// ProcessChecked is false when /proc could not be read.
	ProcessChecked bool `json:"processChecked"`
}

// Health is the kubelet and container runtime section.
type Health struct {
	Kubelet Component `json:"kubelet"`
	Runtime Component `json:"runtime"`
	// Errors are what could not be read or probed.
	Errors []string `json:"errors,omitempty"`
}

// JSON returns the report as indented JSON.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode node report: %w", err)
	}
	return b, nil
}

// ConfigMap returns the ConfigMap that stores r.
func (r *Report) ConfigMap() (*corev1.ConfigMap, error) {
	b, err := r.JSON()
	if err != nil {
		return nil, err
	}
	nodeLabel := r.Node
	if len(nodeLabel) > 63 {
		nodeLabel = nodeLabel[:63]
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: Namespace, Name: ConfigMapName(r.Node),
			Labels: map[string]string{Label: "true", NodeLabel: nodeLabel},
			Annotations: map[string]string{
				"kdiag.io/verdict": r.Verdict.Summary,
				"kdiag.io/time":    r.Time.UTC().Format(time.RFC3339),
			},
		},
		Data: map[string]string{DataKey: string(b)},
	}, nil
}

// Parse reads the report stored in a ConfigMap written by Report.ConfigMap.
func Parse(cm *corev1.ConfigMap) (*Report, error) {
	if cm == nil {
		return nil, errors.New("node report: no ConfigMap")
	}
	data, ok := cm.Data[DataKey]
	if !ok {
		return nil, fmt.Errorf("node report ConfigMap %s/%s: no %q key", cm.Namespace, cm.Name, DataKey)
	}
	var r Report
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return nil, fmt.Errorf("node report ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	if r.Node == "" {
		return nil, fmt.Errorf("node report ConfigMap %s/%s: the report names no node", cm.Namespace, cm.Name)
	}
	return &r, nil
}
