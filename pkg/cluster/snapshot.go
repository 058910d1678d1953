// Package cluster holds the snapshot that every analyzer reads: one
// consistent read of the cluster, taken live with paginated lists or loaded
// from an offline dump, plus the record of what could not be read.
package cluster

import (
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// Snapshot is everything kdiag knows about a cluster at one moment. It is
// read once per run; analyzers only read it.
type Snapshot struct {
	// Source says where the snapshot came from: a context name or a dump path.
	Source string `json:"source"`
	// Live is true for a snapshot read from an API server, false for a dump.
	Live bool `json:"live"`
	// Namespace is the namespace the read was limited to; "" means all.
	Namespace string `json:"namespace,omitempty"`
	// TakenAt is when the read finished (for a dump: when it was loaded).
	// Analyzers measure ages ("NotReady for 12m") against it, never against
	// the wall clock, so that results are reproducible.
	TakenAt time.Time `json:"takenAt"`

	Nodes                []corev1.Node                  `json:"-"`
	Pods                 []corev1.Pod                   `json:"-"`
	Services             []corev1.Service               `json:"-"`
	EndpointSlices       []discoveryv1.EndpointSlice    `json:"-"`
	Deployments          []appsv1.Deployment            `json:"-"`
	ReplicaSets          []appsv1.ReplicaSet            `json:"-"`
	StatefulSets         []appsv1.StatefulSet           `json:"-"`
	DaemonSets           []appsv1.DaemonSet             `json:"-"`
	PodDisruptionBudgets []policyv1.PodDisruptionBudget `json:"-"`
	Events               []corev1.Event                 `json:"-"`
	// ConfigMaps holds only the kube-system ConfigMaps that analyzers use
	// (the CoreDNS Corefile and AKS's coredns-custom). Secrets are never read.
	ConfigMaps []corev1.ConfigMap     `json:"-"`
	Leases     []coordinationv1.Lease `json:"-"`

	// Gaps lists every resource that could not be read, and why. Analyzers
	// that depend on a missing resource stay silent about it; the report
	// shows the gap instead.
	Gaps []Gap `json:"gaps"`

	indexOnce sync.Once
	index     *Index
}

// Resource names a kind of object the snapshot holds.
type Resource string

// The resources a snapshot reads.
const (
	ResNodes          Resource = "nodes"
	ResPods           Resource = "pods"
	ResServices       Resource = "services"
	ResEndpointSlices Resource = "endpointslices"
	ResDeployments    Resource = "deployments"
	ResReplicaSets    Resource = "replicasets"
	ResStatefulSets   Resource = "statefulsets"
	ResDaemonSets     Resource = "daemonsets"
	ResPDBs           Resource = "poddisruptionbudgets"
	ResEvents         Resource = "events"
	ResConfigMaps     Resource = "configmaps"
	ResLeases         Resource = "leases"
)

// Resources returns every resource a snapshot reads, in read order.
func Resources() []Resource {
	return []Resource{ResNodes, ResPods, ResServices, ResEndpointSlices, ResDeployments,
		ResReplicaSets, ResStatefulSets, ResDaemonSets, ResPDBs, ResEvents, ResConfigMaps, ResLeases}
}

// GapReason classifies why a resource is missing from a snapshot.
type GapReason string

// Why a resource could not be read.
const (
	GapForbidden    GapReason = "Forbidden"
	GapUnauthorized GapReason = "Unauthorized"
	GapTimeout      GapReason = "Timeout"
	GapNotInDump    GapReason = "NotInDump"
	GapMalformed    GapReason = "Malformed"
	GapError        GapReason = "Error"
)

// Gap records one resource (optionally in one namespace) that is missing
// from the snapshot.
type Gap struct {
	Resource  Resource  `json:"resource"`
	Namespace string    `json:"namespace,omitempty"`
	Reason    GapReason `json:"reason"`
	Message   string    `json:"message"`
}

// String renders a gap on one line.
func (g Gap) String() string {
	where := string(g.Resource)
	if g.Namespace != "" {
		where += " in " + g.Namespace
	}
	return fmt.Sprintf("%s not read (%s): %s", where, g.Reason, g.Message)
}

// Has reports whether the snapshot read the resource completely, that is
// with no gap recorded for it in any namespace. Analyzers call it before
// concluding anything from the absence of objects.
func (s *Snapshot) Has(r Resource) bool {
	for _, g := range s.Gaps {
		if g.Resource == r {
			return false
		}
	}
	return true
}

// Index returns lookup tables derived from the snapshot, built on first use.
// The snapshot must not be modified after Index is called.
func (s *Snapshot) Index() *Index {
	s.indexOnce.Do(func() { s.index = buildIndex(s) })
	return s.index
}
