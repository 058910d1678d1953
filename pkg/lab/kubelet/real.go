package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// RealPods make the simulator run pods for real (see package runtime) on
// the data plane of a lab started in real mode. The simulator then also
// relays the node network's connections to the API server
// (lab.DataPlane.APIServerHost), so that kube-proxy and pods reach it.
type RealPods struct {
	// Dir is the lab directory; its state.json describes the data plane.
	Dir string
	// Resolver decides which containers run and how. Pods with a container
	// it declines stay simulated.
	Resolver runtime.Resolver
	// BackOff is the first restart delay (default runtime.DefaultBackOff).
	BackOff time.Duration
}

// setupReal reads the lab's data plane and starts the runtime and the logs
// server. Without a data plane (a lab in simulated mode) it returns an
// error: asking for real pods there is a mistake.
func (s *simulator) setupReal(ctx context.Context) error {
	rp := s.opts.Real
	st, err := lab.ReadState(rp.Dir)
	if err != nil {
		return fmt.Errorf("kubelet: real pods: %w", err)
	}
	if st.DataPlane == nil {
		return fmt.Errorf("kubelet: real pods: the lab in %s runs in simulated mode (no data plane)", rp.Dir)
	}
	l := lab.Layout{Dir: st.Dir}
	rt, err := runtime.New(runtime.Options{
		Resolver: rp.Resolver,
		Network:  st.DataPlane.Network,
		Cgroups:  st.DataPlane.Cgroups,
		Parent:   st.DataPlane.CgroupParent,
		Dir:      l.Pods(),
		Client:   s.client,
		Env:      st.DataPlane.PodEnv(l, st.Ports.APIServer),
		BackOff:  rp.BackOff,
		Notify:   func(key string) { s.podQueue.Add(key) },
		Logger:   s.log.With("component", "runtime"),
	})
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	s.rt = rt
	dp := st.DataPlane
	if err := forwardAPIServer(ctx, net.JoinHostPort(dp.APIServerHost(), strconv.Itoa(st.Ports.APIServer)),
		net.JoinHostPort("127.0.0.1", strconv.Itoa(st.Ports.APIServer)), s.log); err != nil {
		return err
	}
	srv, err := newLogServer(ctx, s, l)
	if err != nil {
		return err
	}
	s.logs = srv
	return nil
}

// syncReal runs a pod for real when the runtime takes it, and returns its
// status; ok=false leaves the pod to the simulation.
func (s *simulator) syncReal(ctx context.Context, node *corev1.Node, pod *corev1.Pod, net podNet) (corev1.PodStatus, bool, error) {
	if s.rt == nil || pod.Spec.HostNetwork {
		return corev1.PodStatus{}, false, nil
	}
	addr, gw, err := podPrefix(node, net.podIPs[0])
	if err != nil {
		return corev1.PodStatus{}, false, err
	}
	if _, done := s.gateways.Load(gw); !done {
		if err := s.rt.Network().AddGateway(ctx, gw); err != nil {
			return corev1.PodStatus{}, false, fmt.Errorf("gateway of node %s: %w", node.Name, err)
		}
		s.gateways.Store(gw, true)
	}
	ok, err := s.rt.Sync(ctx, pod, addr, gw.Addr())
	if err != nil {
		// As the kubelet reports a container it cannot create (a missing
		// ConfigMap, an unknown lab program), and retries later.
		s.log.Warn("pod cannot start", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		s.podQueue.AddAfter(pod.Namespace+"/"+pod.Name, realRetry)
		return configErrorStatus(pod, net, metav1.NewTime(s.now().Truncate(time.Second)), err), true, nil
	}
	if !ok {
		return corev1.PodStatus{}, false, nil
	}
	st, ok := s.rt.State(pod.UID)
	if !ok {
		return corev1.PodStatus{}, false, nil
	}
	return realPodStatus(pod, net, metav1.NewTime(s.now().Truncate(time.Second)), st), true, nil
}

// realRetry is how long a real pod that could not start waits for the
// next attempt.
const realRetry = 5 * time.Second

// configErrorStatus is the status of a pod whose containers cannot be
// created: Pending, each container waiting with CreateContainerConfigError.
func configErrorStatus(pod *corev1.Pod, net podNet, now metav1.Time, cause error) corev1.PodStatus {
	st := realPodStatus(pod, net, now, runtime.PodState{Phase: corev1.PodPending, Containers: func() []corev1.ContainerStatus {
		var out []corev1.ContainerStatus
		for _, c := range pod.Spec.Containers {
			out = append(out, corev1.ContainerStatus{Name: c.Name, Started: new(false), State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: cause.Error()},
			}})
		}
		return out
	}()})
	st.PodIP, st.PodIPs = "", nil
	return st
}

// podPrefix returns the pod's IP with its node's podCIDR length, and the
// node's gateway (the podCIDR's first address) with that length.
func podPrefix(node *corev1.Node, ip string) (netip.Prefix, netip.Prefix, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("pod IP %q: %w", ip, err)
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || !p.Contains(a) {
			continue
		}
		p = p.Masked()
		return netip.PrefixFrom(a, p.Bits()), netip.PrefixFrom(p.Addr().Next(), p.Bits()), nil
	}
	return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("pod IP %s is in no podCIDR of node %s", ip, node.Name)
}

// removeReal stops a real pod (if it is one) and frees what it holds.
func (s *simulator) removeReal(ctx context.Context, pod *corev1.Pod) error {
	if s.rt == nil {
		return nil
	}
	s.rt.Forget(pod.UID)
	return s.rt.Remove(ctx, pod.UID)
}

// realPodStatus is the status of a real pod: the simulated one with the
// runtime's phase, container statuses and readiness.
func realPodStatus(pod *corev1.Pod, net podNet, now metav1.Time, rs runtime.PodState) corev1.PodStatus {
	st := desiredPodStatus(pod, net, now)
	st.Phase = rs.Phase
	st.ContainerStatuses = nil
	var unready []string
	for i, cs := range rs.Containers {
		c := pod.Spec.Containers[i]
		cs.Image = NormalizeImage(c.Image)
		cs.ImageID = ImageID(c.Image)
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	if st.QOSClass == "" {
		st.QOSClass = runtime.ComputeQOS(pod)
	}
	cur := pod.Status.Conditions
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != corev1.PodReady && c.Type != corev1.ContainersReady {
			continue
		}
		if len(unready) == 0 {
			continue // as simulated: ready, unless readiness gates say no
		}
		status := corev1.ConditionFalse
		reason := "ContainersNotReady"
		if rs.Phase == corev1.PodSucceeded || rs.Phase == corev1.PodFailed {
			reason = "PodCompleted"
		}
		msg := "containers with unready status: [" + strings.Join(unready, " ") + "]"
		if reason == "PodCompleted" {
			msg = ""
		}
		lt := now
		if old := findCondition(cur, c.Type); old != nil && old.Status == status {
			lt = old.LastTransitionTime
		}
		*c = corev1.PodCondition{Type: c.Type, Status: status, Reason: reason, Message: msg, ObservedGeneration: c.ObservedGeneration, LastTransitionTime: lt}
	}
	return st
}

// realContainerLog returns the log file of a container of a real pod.
func (s *simulator) realContainerLog(ns, name, container string, previous bool) (string, bool, error) {
	pod, err := s.podLister.Pods(ns).Get(name)
	if err != nil {
		return "", false, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == container }) {
		return "", false, fmt.Errorf("container %s is not valid for pod %s", container, name)
	}
	if s.rt == nil || !s.rt.Runs(pod.UID) {
		return "", false, fmt.Errorf("pod %s/%s is simulated: it has no logs (only pods whose images the lab can run write logs)", ns, name)
	}
	return s.rt.LogFile(pod.UID, container, previous)
}
