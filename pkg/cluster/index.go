package cluster

import (
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Index holds lookup tables derived from a Snapshot, so that analyzers run
// in linear time on clusters with tens of thousands of pods. Slices point
// into the snapshot; callers must not modify what they get.
type Index struct {
	nodes          map[string]*corev1.Node
	podsByNS       map[string][]*corev1.Pod
	podsByNode     map[string][]*corev1.Pod
	leases         map[string]*coordinationv1.Lease
	slicesBySvc    map[nsName][]*discoveryv1.EndpointSlice
	replicaSets    map[nsName]*appsv1.ReplicaSet
	deployments    map[nsName]*appsv1.Deployment
	statefulSets   map[nsName]*appsv1.StatefulSet
	daemonSets     map[nsName]*appsv1.DaemonSet
	pdbsByNS       map[string][]*policyv1.PodDisruptionBudget
	eventsByObject map[objKey][]*corev1.Event
	configMaps     map[nsName]*corev1.ConfigMap
}

type nsName struct{ ns, name string }

type objKey struct{ kind, ns, name string }

func buildIndex(s *Snapshot) *Index {
	ix := &Index{
		nodes:          make(map[string]*corev1.Node, len(s.Nodes)),
		podsByNS:       map[string][]*corev1.Pod{},
		podsByNode:     map[string][]*corev1.Pod{},
		leases:         map[string]*coordinationv1.Lease{},
		slicesBySvc:    map[nsName][]*discoveryv1.EndpointSlice{},
		replicaSets:    make(map[nsName]*appsv1.ReplicaSet, len(s.ReplicaSets)),
		deployments:    make(map[nsName]*appsv1.Deployment, len(s.Deployments)),
		statefulSets:   map[nsName]*appsv1.StatefulSet{},
		daemonSets:     map[nsName]*appsv1.DaemonSet{},
		pdbsByNS:       map[string][]*policyv1.PodDisruptionBudget{},
		eventsByObject: map[objKey][]*corev1.Event{},
		configMaps:     map[nsName]*corev1.ConfigMap{},
	}
	for i := range s.Nodes {
		ix.nodes[s.Nodes[i].Name] = &s.Nodes[i]
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		ix.podsByNS[p.Namespace] = append(ix.podsByNS[p.Namespace], p)
		if p.Spec.NodeName != "" {
			ix.podsByNode[p.Spec.NodeName] = append(ix.podsByNode[p.Spec.NodeName], p)
		}
	}
	for i := range s.Leases {
		l := &s.Leases[i]
		if l.Namespace == corev1.NamespaceNodeLease {
			ix.leases[l.Name] = l
		}
	}
	for i := range s.EndpointSlices {
		es := &s.EndpointSlices[i]
		if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := nsName{es.Namespace, svc}
			ix.slicesBySvc[k] = append(ix.slicesBySvc[k], es)
		}
	}
	for i := range s.ReplicaSets {
		ix.replicaSets[nsName{s.ReplicaSets[i].Namespace, s.ReplicaSets[i].Name}] = &s.ReplicaSets[i]
	}
	for i := range s.Deployments {
		ix.deployments[nsName{s.Deployments[i].Namespace, s.Deployments[i].Name}] = &s.Deployments[i]
	}
	for i := range s.StatefulSets {
		ix.statefulSets[nsName{s.StatefulSets[i].Namespace, s.StatefulSets[i].Name}] = &s.StatefulSets[i]
	}
	for i := range s.DaemonSets {
		ix.daemonSets[nsName{s.DaemonSets[i].Namespace, s.DaemonSets[i].Name}] = &s.DaemonSets[i]
	}
	for i := range s.PodDisruptionBudgets {
		p := &s.PodDisruptionBudgets[i]
		ix.pdbsByNS[p.Namespace] = append(ix.pdbsByNS[p.Namespace], p)
	}
	for i := range s.Events {
		e := &s.Events[i]
		k := objKey{e.InvolvedObject.Kind, e.InvolvedObject.Namespace, e.InvolvedObject.Name}
		ix.eventsByObject[k] = append(ix.eventsByObject[k], e)
	}
	for _, evs := range ix.eventsByObject {
		sort.SliceStable(evs, func(i, j int) bool {
			a, b := EventTime(evs[i]), EventTime(evs[j])
			return a.Time.Before(b.Time)
		})
	}
	for i := range s.ConfigMaps {
		ix.configMaps[nsName{s.ConfigMaps[i].Namespace, s.ConfigMaps[i].Name}] = &s.ConfigMaps[i]
	}
	return ix
}

// Node returns the node with the given name, or nil.
func (ix *Index) Node(name string) *corev1.Node { return ix.nodes[name] }

// PodsInNamespace returns the pods of one namespace.
func (ix *Index) PodsInNamespace(ns string) []*corev1.Pod { return ix.podsByNS[ns] }

// PodsOnNode returns the pods bound to a node.
func (ix *Index) PodsOnNode(node string) []*corev1.Pod { return ix.podsByNode[node] }

// Lease returns the node's heartbeat Lease in kube-node-lease, or nil.
func (ix *Index) Lease(node string) *coordinationv1.Lease { return ix.leases[node] }

// EndpointSlices returns the EndpointSlices of a Service.
func (ix *Index) EndpointSlices(ns, service string) []*discoveryv1.EndpointSlice {
	return ix.slicesBySvc[nsName{ns, service}]
}

// Deployment returns a Deployment by namespace and name, or nil.
func (ix *Index) Deployment(ns, name string) *appsv1.Deployment {
	return ix.deployments[nsName{ns, name}]
}

// StatefulSet returns a StatefulSet by namespace and name, or nil.
func (ix *Index) StatefulSet(ns, name string) *appsv1.StatefulSet {
	return ix.statefulSets[nsName{ns, name}]
}

// ReplicaSet returns a ReplicaSet by namespace and name, or nil.
func (ix *Index) ReplicaSet(ns, name string) *appsv1.ReplicaSet {
	return ix.replicaSets[nsName{ns, name}]
}

// DaemonSet returns a DaemonSet by namespace and name, or nil.
func (ix *Index) DaemonSet(ns, name string) *appsv1.DaemonSet { return ix.daemonSets[nsName{ns, name}] }

// PDBsInNamespace returns the PodDisruptionBudgets of one namespace.
func (ix *Index) PDBsInNamespace(ns string) []*policyv1.PodDisruptionBudget { return ix.pdbsByNS[ns] }

// ConfigMap returns a ConfigMap by namespace and name, or nil.
func (ix *Index) ConfigMap(ns, name string) *corev1.ConfigMap { return ix.configMaps[nsName{ns, name}] }

// EventsFor returns the events whose involvedObject is the given object,
// oldest first.
func (ix *Index) EventsFor(kind, ns, name string) []*corev1.Event {
	return ix.eventsByObject[objKey{kind, ns, name}]
}

// PodsMatching returns the pods in ns whose labels match the selector. A nil
// or empty selector matches nothing, as for a Service's selector. PDBs
// differ (in policy/v1 an empty selector matches every pod of the
// namespace): match them with pkg/pdb instead.
func (ix *Index) PodsMatching(ns string, sel labels.Selector) []*corev1.Pod {
	if sel == nil || sel.Empty() {
		return nil
	}
	var out []*corev1.Pod
	for _, p := range ix.podsByNS[ns] {
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// Workload names the top-level controller of a pod.
type Workload struct {
	Kind string
	Name string
	// Replicas is the desired replica count; nil when unknown or not
	// applicable (DaemonSet, bare pod, owner not in the snapshot).
	Replicas *int32
}

// OwnerOf resolves a pod to its top-level workload: a Deployment (through
// its ReplicaSet), StatefulSet, DaemonSet, ReplicaSet or ReplicationController,
// or Pod itself for an unmanaged pod.
func (ix *Index) OwnerOf(p *corev1.Pod) Workload {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return Workload{Kind: "Pod", Name: p.Name}
	}
	switch ref.Kind {
	case "ReplicaSet":
		rs := ix.ReplicaSet(p.Namespace, ref.Name)
		if rs == nil {
			return Workload{Kind: "ReplicaSet", Name: ref.Name}
		}
		if dref := metav1.GetControllerOf(rs); dref != nil && dref.Kind == "Deployment" {
			w := Workload{Kind: "Deployment", Name: dref.Name}
			if d := ix.Deployment(p.Namespace, dref.Name); d != nil {
				w.Replicas = replicasOrDefault(d.Spec.Replicas)
			}
			return w
		}
		return Workload{Kind: "ReplicaSet", Name: rs.Name, Replicas: replicasOrDefault(rs.Spec.Replicas)}
	case "StatefulSet":
		w := Workload{Kind: "StatefulSet", Name: ref.Name}
		if s := ix.StatefulSet(p.Namespace, ref.Name); s != nil {
			w.Replicas = replicasOrDefault(s.Spec.Replicas)
		}
		return w
	default:
		return Workload{Kind: ref.Kind, Name: ref.Name}
	}
}

func replicasOrDefault(r *int32) *int32 {
	if r == nil {
		one := int32(1)
		return &one
	}
	v := *r
	return &v
}

// EventTime returns the most recent time an event was seen, whichever of
// its time fields the emitter filled in.
func EventTime(e *corev1.Event) metav1.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return metav1.Time{Time: e.Series.LastObservedTime.Time}
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp
	case !e.EventTime.IsZero():
		return metav1.Time{Time: e.EventTime.Time}
	default:
		return e.FirstTimestamp
	}
}

// EventCount returns how many times an event was seen, whichever API
// wrote it: the events.k8s.io series count, the core/v1 count, else 1.
func EventCount(e *corev1.Event) int32 {
	switch {
	case e.Series != nil && e.Series.Count > 0:
		return e.Series.Count
	case e.Count > 0:
		return e.Count
	default:
		return 1
	}
}

// EventFirstSeen returns when an event was first seen: its first
// timestamp, else its event time, else EventTime.
func EventFirstSeen(e *corev1.Event) metav1.Time {
	switch {
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp
	case !e.EventTime.IsZero():
		return metav1.Time{Time: e.EventTime.Time}
	default:
		return EventTime(e)
	}
}
