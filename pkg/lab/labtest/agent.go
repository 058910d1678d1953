package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
)

// This file lets a test run a kdiag agent for one lab node and reach it
// the way the CLI does, through the API server's pod proxy.
//
// The API server refuses to proxy to loopback addresses, and lab nodes are
// 127.0.1.x. So StartAgent gives the agent an address of its own: a
// bridge link with no ports, created for the test in this machine's
// network namespace, carrying one /32 from the node's podCIDR. An address
// on a local link is routed through the local table only: packets to it
// never leave the machine. The link is deleted when the test ends.

// Agent defaults, as in deploy/agent (and package agentclient, which this
// package does not import).
const (
	AgentNamespace = "kube-system"
	AgentLabelKey  = "app.kubernetes.io/name"
	AgentLabel     = "kdiag-agent"
	AgentPortName  = "metrics"
)

// AgentOptions configure StartAgent.
type AgentOptions struct {
	// Node is the lab node the agent serves.
	Node string
	// Run runs the agent, listening on listen ("ip:port"), until ctx ends;
	// typically
	//
	//	a, err := agent.New(agent.Options{Node: node, RESTConfig: c.RESTConfig(),
	//		Listen: listen, Handlers: handlers})
	//	...
	//	return a.Run(ctx)
	//
	// (labtest does not import package agent: agent's own tests use labtest).
	Run func(ctx context.Context, listen string) error
}

// LabAgent is an agent started by StartAgent.
type LabAgent struct {
	// Node is the node it serves.
	Node string
	// Pod is its kube-system pod, Running and Ready, with status.podIP set
	// to Addr's address.
	Pod *corev1.Pod
	// Addr is where it listens.
	Addr netip.AddrPort
}

// StartAgent runs an agent for one lab node and creates its pod, so that
// pods/proxy (and package agentclient) reach it. It needs root (to add the
// link); without root it skips the test. Everything is removed when the
// test ends: the pod, the agent (its context is cancelled and Run awaited)
// and the link.
func StartAgent(t testing.TB, c *lab.Cluster, opts AgentOptions) *LabAgent {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab agent needs a non-loopback local address, and adding one needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the lab agent needs iproute2 (ip) to add its address")
	}
	if opts.Node == "" || opts.Run == nil {
		t.Fatal("labtest.StartAgent: Node and Run are required")
	}
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatalf("API client: %v", err)
	}
	var cidr netip.Prefix
	WaitFor(t, ctx, "podCIDR of node "+opts.Node, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, opts.Node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
				cidr = p.Masked()
				return true, nil
			}
		}
		return false, nil
	})

	addr, err := localAddress(cidr)
	if err != nil {
		t.Fatalf("agent address in %s: %v", cidr, err)
	}
	link := "kdl" + randomHex(5)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", link).Run() })
	ipCmd(t, "link", "add", link, "type", "bridge")
	// No IPv6 on the link: no link-local address, no router solicitations.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+link+"/disable_ipv6", []byte("1"), 0o644)
	ipCmd(t, "addr", "add", addr.String()+"/32", "dev", link)
	ipCmd(t, "link", "set", link, "up")

	ap, err := freePort(addr)
	if err != nil {
		t.Fatalf("free port on %s: %v", addr, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- opts.Run(runCtx, ap.String()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("lab agent on %s: %v", opts.Node, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("lab agent on %s did not stop within 30s", opts.Node)
		}
	})
	if err := waitListening(ap, done, 30*time.Second); err != nil {
		t.Fatalf("lab agent on %s: %v", opts.Node, err)
	}

	name := "kdiag-agent-" + opts.Node + "-" + randomHex(2)
	zero := int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: AgentNamespace,
			Labels:      map[string]string{AgentLabelKey: AgentLabel},
			Annotations: map[string]string{kubelet.AnnotationManualStatus: "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:                      opts.Node,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "agent", Image: "ghcr.io/kdiag/kdiag:latest",
				Ports: []corev1.ContainerPort{{Name: AgentPortName, ContainerPort: int32(ap.Port())}},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(AgentNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create agent pod %s/%s: %v", AgentNamespace, name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(AgentNamespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	ip := addr.String()
	SetPodStatus(t, ctx, cs, AgentNamespace, name, func(p *corev1.Pod) {
		now := metav1.Now()
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		p.Status.HostIP = ""
		p.Status.StartTime = &now
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: "agent", Image: p.Spec.Containers[0].Image, Ready: true, Started: new(true),
			ContainerID: "containerd://" + randomHex(32),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}}
	}, func(p *corev1.Pod) bool { return PodReady(p) && p.Status.PodIP == ip })
	got, err := cs.CoreV1().Pods(AgentNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read agent pod back: %v", err)
	}
	t.Logf("lab agent for node %s: pod %s/%s at %s", opts.Node, AgentNamespace, name, ap)
	return &LabAgent{Node: opts.Node, Pod: got, Addr: ap}
}

// localAddress picks an address from the upper half of cidr that no
// interface of this machine holds (several test binaries may each run a
// lab whose nodes have the same podCIDRs). The kubelet simulator's IPAM
// hands out addresses from the bottom up, so pods rarely reach it.
func localAddress(cidr netip.Prefix) (netip.Addr, error) {
	bits := 32 - cidr.Bits()
	if bits < 3 {
		return netip.Addr{}, fmt.Errorf("podCIDR %s too small", cidr)
	}
	held := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				held[p.Addr()] = true
			}
		}
	}
	size := int64(1) << bits
	base := cidr.Addr().As4()
	baseN := int64(base[0])<<24 | int64(base[1])<<16 | int64(base[2])<<8 | int64(base[3])
	for range 100 {
		// upper half, never the broadcast address
		off, err := rand.Int(rand.Reader, big.NewInt(size/2-1))
		if err != nil {
			return netip.Addr{}, err
		}
		n := baseN + size/2 + off.Int64()
		a := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		if !held[a] {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("no free address after 100 tries")
}

// freePort asks the kernel for a free port on addr. The agent listens on
// it right after; another process taking it in between is unlikely on a
// test-only address.
func freePort(addr netip.Addr) (netip.AddrPort, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap, err := netip.ParseAddrPort(l.Addr().String())
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	return ap, err
}

// waitListening waits until ap accepts connections or the agent exits.
func waitListening(ap netip.AddrPort, done <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", ap.String(), time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case rerr := <-done:
			return fmt.Errorf("exited before listening on %s: %v", ap, rerr)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s: %w", ap, timeout, err)
		}
	}
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// URL returns the agent's base URL on its own address (for tests that
// bypass the API server).
func (a *LabAgent) URL() string { return "http://" + a.Addr.String() }

// String names the agent for test logs.
func (a *LabAgent) String() string {
	return a.Node + " (" + AgentNamespace + "/" + a.Pod.Name + " at " + a.Addr.String() + ")"
}
