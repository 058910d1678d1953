package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/hostid"
)

// DefaultPools returns the two pools of the seed's AKS cluster: a System
// pool np1 of Standard_D4s_v5 and a User pool np2 of Standard_D8s_v5, with
// allocatable resources close to what AKS reserves on those sizes.
func DefaultPools() []Pool {
	return []Pool{
		{
			Name: "np1", Mode: "System", InstanceType: "Standard_D4s_v5",
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("4"),
				corev1.ResourceMemory:           resource.MustParse("16374584Ki"),
				corev1.ResourceEphemeralStorage: resource.MustParse("129886128Ki"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("3860m"),
				corev1.ResourceMemory:           resource.MustParse("12880184Ki"),
				corev1.ResourceEphemeralStorage: resource.MustParse("119703055367"),
			},
		},
		{
			Name: "np2", Mode: "User", InstanceType: "Standard_D8s_v5",
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("8"),
				corev1.ResourceMemory:           resource.MustParse("32863352Ki"),
				corev1.ResourceEphemeralStorage: resource.MustParse("129886128Ki"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("7820m"),
				corev1.ResourceMemory:           resource.MustParse("28157560Ki"),
				corev1.ResourceEphemeralStorage: resource.MustParse("119703055367"),
			},
		},
	}
}

// NodeInternalIP returns the InternalIP of the i-th node (1-based): the
// addresses 127.0.1.1 ... 127.0.1.254, then 127.0.2.1 ... and so on, so
// that anything dialing a node stays on loopback even with 1,000 nodes.
func NodeInternalIP(i int) netip.Addr {
	block, offset := (i-1)/254, (i-1)%254+1
	return netip.AddrFrom4([4]byte{127, 0, byte(1 + block), byte(offset)})
}

// poolOf returns the pool of the i-th of n nodes: pools take contiguous
// blocks of (almost) equal size, the first pools the larger blocks.
func poolOf(pools []Pool, i, n int) Pool {
	return pools[(i-1)*len(pools)/n]
}

// newNode is the Node the i-th simulated kubelet registers.
func (s *simulator) newNode(i int) *corev1.Node {
	name := s.nodeName(i)
	pool := poolOf(s.opts.Pools, i, s.opts.Nodes)
	zone := s.opts.Zones[(i-1)%len(s.opts.Zones)]
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname:                      name,
				corev1.LabelOSStable:                      "linux",
				corev1.LabelArchStable:                    "amd64",
				"beta.kubernetes.io/os":                   "linux",
				"beta.kubernetes.io/arch":                 "amd64",
				corev1.LabelInstanceTypeStable:            pool.InstanceType,
				corev1.LabelTopologyZone:                  zone,
				corev1.LabelTopologyRegion:                "lab",
				LabelAgentPool:                            pool.Name,
				AKSLabelAgentPool:                         pool.Name,
				AKSLabelMode:                              pool.Mode,
				"kubernetes.azure.com/os-sku":             "Ubuntu",
				"kubernetes.azure.com/node-image-version": "AKSUbuntu-2404gen2containerd-202607.10.0",
				LabelSimulated:                            "true",
			},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
		},
		Spec: corev1.NodeSpec{ProviderID: "kdiag-lab://" + name},
	}
	if id := s.opts.HostID; id != "" && id != "-" {
		node.Labels[hostid.Label] = id
	}
	node.Status = s.desiredNodeStatus(node, nil)
	return node
}

// capacity returns the pool's capacity and allocatable with pods=110 and
// empty hugepages added, as the kubelet reports them.
func capacity(pool Pool) (corev1.ResourceList, corev1.ResourceList) {
	c, a := pool.Capacity.DeepCopy(), pool.Allocatable.DeepCopy()
	if c == nil {
		c = corev1.ResourceList{}
	}
	if a == nil {
		a = corev1.ResourceList{}
	}
	for _, rl := range []corev1.ResourceList{c, a} {
		if _, ok := rl[corev1.ResourcePods]; !ok {
			rl[corev1.ResourcePods] = resource.MustParse("110")
		}
		for _, hp := range []corev1.ResourceName{"hugepages-1Gi", "hugepages-2Mi"} {
			if _, ok := rl[hp]; !ok {
				rl[hp] = resource.MustParse("0")
			}
		}
	}
	for k, v := range c {
		if _, ok := a[k]; !ok {
			a[k] = v.DeepCopy()
		}
	}
	return c, a
}

// stableID derives a stable hex ID from the node name, so that a restarted
// simulator reports the same machine and boot IDs.
func stableID(kind, name string, n int) string {
	sum := sha256.Sum256([]byte(kind + "/" + name))
	return hex.EncodeToString(sum[:])[:n]
}

// healthyCondition is one condition of a healthy node.
type healthyCondition struct {
	Type            corev1.NodeConditionType
	Status          corev1.ConditionStatus
	Reason, Message string
}

// healthyConditions are the conditions of a healthy node, in the kubelet's
// order, with the kubelet's reasons and messages.
func healthyConditions() []healthyCondition {
	return []healthyCondition{
		{corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", "RouteController created a route"},
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"},
	}
}

// desiredNodeStatus is the status the node's kubelet reports now. Conditions
// keep their lastTransitionTime while their status does not change; every
// heartbeat time is now.
func (s *simulator) desiredNodeStatus(node *corev1.Node, current *corev1.NodeStatus) corev1.NodeStatus {
	i := s.nodeIndex(node.Name)
	pool := poolOf(s.opts.Pools, i, s.opts.Nodes)
	c, a := capacity(pool)
	now := metav1.NewTime(s.now().Truncate(time.Second))
	st := corev1.NodeStatus{
		Capacity:    c,
		Allocatable: a,
		Phase:       "",
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: NodeInternalIP(i).String()},
			{Type: corev1.NodeHostName, Address: node.Name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: s.kubeletPort()}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               stableID("machine", node.Name, 32),
			SystemUUID:              uuidFrom(stableID("system", node.Name, 32)),
			BootID:                  uuidFrom(stableID("boot", node.Name, 32)),
			KernelVersion:           KernelVersion,
			OSImage:                 OSImage,
			ContainerRuntimeVersion: ContainerRuntimeVersion,
			KubeletVersion:          KubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            "amd64",
		},
	}
	for _, hc := range healthyConditions() {
		cond := corev1.NodeCondition{
			Type: hc.Type, Status: hc.Status, Reason: hc.Reason, Message: hc.Message,
			LastHeartbeatTime: now, LastTransitionTime: now,
		}
		if current != nil {
			for _, old := range current.Conditions {
				if old.Type == hc.Type && old.Status == hc.Status {
					cond.LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		st.Conditions = append(st.Conditions, cond)
	}
	if current != nil {
		// Conditions of other types belong to others, such as Node Problem
		// Detector's KernelDeadlock or kdiag agent's; the kubelet keeps them.
		for _, c := range current.Conditions {
			if !slices.ContainsFunc(st.Conditions, func(o corev1.NodeCondition) bool { return o.Type == c.Type }) {
				st.Conditions = append(st.Conditions, c)
			}
		}
		// Fields the kubelet does not own here (images, volumes, runtime
		// handlers, features) are kept as they are.
		st.Images = current.Images
		st.VolumesInUse = current.VolumesInUse
		st.VolumesAttached = current.VolumesAttached
		st.RuntimeHandlers = current.RuntimeHandlers
		st.Features = current.Features
		st.Config = current.Config
		st.DeclaredFeatures = current.DeclaredFeatures
	}
	return st
}

func uuidFrom(h string) string {
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

// nodeStatusChanged reports whether the node's status differs from desired
// in anything but heartbeat and transition times.
func nodeStatusChanged(current, desired *corev1.NodeStatus) bool {
	if len(current.Conditions) != len(desired.Conditions) {
		return true
	}
	for _, d := range desired.Conditions {
		found := false
		for _, c := range current.Conditions {
			if c.Type == d.Type {
				found = c.Status == d.Status && c.Reason == d.Reason && c.Message == d.Message
				break
			}
		}
		if !found {
			return true
		}
	}
	return !apiequality.Semantic.DeepEqual(current.Capacity, desired.Capacity) ||
		!apiequality.Semantic.DeepEqual(current.Allocatable, desired.Allocatable) ||
		!apiequality.Semantic.DeepEqual(current.Addresses, desired.Addresses) ||
		!apiequality.Semantic.DeepEqual(current.NodeInfo, desired.NodeInfo) ||
		current.DaemonEndpoints != desired.DaemonEndpoints
}

// lastHeartbeat is the newest condition heartbeat of a node status.
func lastHeartbeat(st *corev1.NodeStatus) time.Time {
	var t time.Time
	for _, c := range st.Conditions {
		if c.LastHeartbeatTime.After(t) {
			t = c.LastHeartbeatTime.Time
		}
	}
	return t
}

// syncNode keeps one node's Lease running (or stopped) and reports its
// status when it changed or when StatusReportFrequency has elapsed.
func (s *simulator) syncNode(ctx context.Context, name string) error {
	node, err := s.nodeLister.Get(name)
	if apierrors.IsNotFound(err) {
		// Like a real kubelet, the simulator does not re-register a node
		// deleted under it; its Lease goes on until the process restarts.
		return nil
	}
	if err != nil {
		return fmt.Errorf("get node %s from cache: %w", name, err)
	}
	if !heartbeatOn(node) {
		s.leases.stop(name)
		return nil
	}
	s.leases.start(name)
	if manualStatus(node) {
		return nil
	}
	desired := s.desiredNodeStatus(node, &node.Status)
	since := s.now().Sub(lastHeartbeat(&node.Status))
	if !nodeStatusChanged(&node.Status, &desired) && since < s.opts.StatusReportFrequency {
		s.nodeQueue.AddAfter(name, s.jitter(s.opts.StatusReportFrequency-since))
		return nil
	}
	updated := node.DeepCopy()
	updated.Status = desired
	if _, err := s.client.CoreV1().Nodes().UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
		return fmt.Errorf("update status of node %s: %w", name, err)
	}
	s.nodeQueue.AddAfter(name, s.jitter(s.opts.StatusReportFrequency))
	return nil
}

// jitter spreads periodic reports over [0.5d, 1.5d], like the kubelet does
// for nodeStatusReportFrequency, so that 1,000 nodes do not report at once.
func (s *simulator) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

// kubeletPort is the port of the kubelet API: the logs server's in real
// mode, else the kubelet's default, where nothing listens.
func (s *simulator) kubeletPort() int32 {
	if s.logs != nil {
		return int32(s.logs.port)
	}
	return 10250
}
