package remote_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/agent"
	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/remote"
	"github.com/kdiag/kdiag/pkg/gadget/server"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

func TestMain(m *testing.M) {
	testbed.RunHelperIfRequested()
	labtest.Main(m, labtest.Options{Nodes: 2})
}

const (
	agentNode   = "lab-node-1"
	noAgentNode = "lab-node-2"
)

// registerPod creates the bed pod p in the lab's API server on node, with
// the status the kubelet would report (Running, its IPs, its container
// ID), owned by the test (the simulated kubelet leaves it alone). The API
// server assigns its own UID, so the pod's cgroups are re-created under
// that UID (cgroup v2 cannot rename a directory) before any process of
// the pod starts; the bed's cleanup removes them with the rest.
func registerPod(t testing.TB, ctx context.Context, cs kubernetes.Interface, p *testbed.Pod, node string) {
	t.Helper()
	obj := p.CorePod(node)
	obj.UID, obj.Status = "", corev1.PodStatus{}
	obj.Annotations = map[string]string{kubelet.AnnotationManualStatus: "true"}
	created, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	// Deleted at once when the test ends: the next test's bed reuses the
	// same pod IPs, and no kubelet confirms a graceful deletion.
	t.Cleanup(func() {
		zero := int64(0)
		_ = cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	newUID := string(created.UID)
	var dirs []string
	for _, dir := range p.Cgroups {
		podDir := filepath.Dir(dir)
		nd := filepath.Join(filepath.Dir(podDir), "pod"+newUID, filepath.Base(dir))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			t.Fatalf("cgroup for %s: %v", p.Name, err)
		}
		if dir == p.MemoryCgroup {
			p.MemoryCgroup = nd
		}
		if dir == p.CgroupV2 {
			p.CgroupV2 = nd
		}
		dirs = append(dirs, nd)
	}
	p.Cgroups, p.UID = dirs, newUID
	want := p.CorePod(node).Status
	labtest.SetPodStatus(t, ctx, cs, p.Namespace, p.Name, func(pod *corev1.Pod) {
		pod.Status = want
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}, func(pod *corev1.Pod) bool {
		return pod.Status.PodIP == want.PodIP && len(pod.Status.ContainerStatuses) == 1
	})
}

// startLabAgent runs the real agent, with the gadget server, for node.
// Its disk monitor and automatic diagnostics are off: a disk walk retires an OS thread (it locks one and
// lets it end), and a thread that ends sends SIGKILL to the test bed's
// helpers it forked (Pdeathsig), which would kill the bed's DNS servers.
func startLabAgent(t testing.TB, c *lab.Cluster, node string) *labtest.LabAgent {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return labtest.StartAgent(t, c, labtest.AgentOptions{Node: node, Run: func(ctx context.Context, listen string) error {
		gadgets := server.New(server.Options{Node: node, NewSource: server.KubernetesSource(c.RESTConfig(), node, log), Logger: log, Progress: time.Second})
		defer gadgets.Close()
		a, err := agent.New(agent.Options{Node: node, RESTConfig: c.RESTConfig(), Listen: listen, DisablePSI: true, DisableDisk: true, ReportInterval: -1, Logger: log,
			Handlers: map[string]http.Handler{wire.PathPrefix: gadgets}})
		if err != nil {
			return err
		}
		return a.Run(ctx)
	}})
}

// traceRun is a remote.Run in the background.
type traceRun struct {
	started chan string
	events  chan []byte
	notices chan string
	done    chan struct{}
	res     remote.Result
	err     error
}

func startTrace(ctx context.Context, cs kubernetes.Interface, opts remote.Options) *traceRun {
	tr := &traceRun{started: make(chan string, 1), events: make(chan []byte, 10000), notices: make(chan string, 100), done: make(chan struct{})}
	opts.Agents = agentclient.New(cs, agentclient.Options{})
	opts.Event = func(_ string, line []byte) error {
		select {
		case tr.events <- line:
		default:
		}
		return nil
	}
	opts.Notice = func(m string) {
		if strings.Contains(m, "tracing on") {
			tr.started <- m
		}
		select {
		case tr.notices <- m:
		default:
		}
	}
	go func() {
		defer close(tr.done)
		tr.res, tr.err = remote.Run(ctx, opts)
	}()
	return tr
}

func (tr *traceRun) waitStarted(t *testing.T) string {
	t.Helper()
	select {
	case m := <-tr.started:
		return m
	case <-tr.done:
		t.Fatalf("trace ended before starting: %v; %+v", tr.err, tr.res)
	case <-time.After(90 * time.Second):
		t.Fatal("no agent started within 90s")
	}
	return ""
}

func (tr *traceRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-tr.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("trace did not end within 2 minutes")
	}
}

func nodeResult(t *testing.T, res remote.Result, node string) remote.NodeResult {
	t.Helper()
	for _, nr := range res.Nodes {
		if nr.Node == node {
			return nr
		}
	}
	t.Fatalf("no result for node %s: %+v", node, res.Nodes)
	return remote.NodeResult{}
}

// TestClusterModeDNS is the seed's DNS case in cluster mode: a query from
// the checkout pod on a lab node is answered with SERVFAIL; the trace runs
// on that node's agent, and the CLI side receives the events through the
// API server's pod proxy, labelled with the node, namespace and pod, and
// the nameserver named as a pod. The other node has no agent, and the
// summary says so; the agent's final counts (zero lost) arrive.
func TestClusterModeDNS(t *testing.T) {
	bed := testbed.New(t) // skips unless root with BTF
	c := labtest.Cluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ns := "trace-dns"
	labtest.CreateNamespace(t, ctx, cs, ns)
	client := bed.AddPod(ns, "checkout-7d9f", testbed.PodOptions{Labels: map[string]string{"app": "checkout"}})
	coredns := bed.AddPod(ns, "coredns-5c6b", testbed.PodOptions{Labels: map[string]string{"app": "coredns"}})
	registerPod(t, ctx, cs, client, agentNode)
	registerPod(t, ctx, cs, coredns, agentNode)
	bed.StartReady(client, "sleep")
	bed.StartReady(coredns, "dns-server", ":53")
	startLabAgent(t, c, agentNode)

	// From a laptop (no local node), the pod filter selects the node.
	sel := enrich.Filter{Namespace: ns, PodPrefix: "checkout"}
	plan, err := remote.Decide(ctx, cs, remote.PlanInput{Filter: sel})
	if err != nil || !plan.Cluster || len(plan.Nodes) != 1 || plan.Nodes[0] != agentNode {
		t.Fatalf("plan for -n %s -p checkout: %+v, %v; want cluster mode on %s", ns, plan, err, agentNode)
	}

	tr := startTrace(ctx, cs, remote.Options{
		Gadget: wire.DNS, Nodes: []string{agentNode, noAgentNode},
		Params: wire.Params{Namespace: ns, PodPrefix: "checkout", Duration: 10 * time.Second},
	})
	msg := tr.waitStarted(t)
	if !strings.Contains(msg, "tracing on 1 node(s): "+agentNode) || !strings.Contains(msg, noAgentNode+" (no agent)") {
		t.Errorf("start notice %q should name %s as tracing and %s as without agent", msg, agentNode, noAgentNode)
	}
	server := net.JoinHostPort(coredns.IPv4.String(), "53")
	q := bed.Start(client, "dns-query", server, "udp", "fail.example.com.", "A")
	if err := q.WaitLine("result rcode=RCodeServerFailure", 10*time.Second); err != nil {
		t.Fatalf("query: %v", err)
	}

	var got *dns.Event
	deadline := time.After(20 * time.Second)
	for got == nil {
		select {
		case line := <-tr.events:
			var ev dns.Event
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("event line is not a dns event: %v: %s", err, line)
			}
			if ev.Name == "fail.example.com." && ev.QR == "R" {
				got = &ev
			}
		case <-deadline:
			t.Fatal("no SERVFAIL response event through the agent within 20s")
		}
	}
	want := enrich.K8s{Node: agentNode, Namespace: ns, Pod: client.Name, Container: client.ContainerName}
	if got.K8s.Node != want.Node || got.K8s.Namespace != want.Namespace || got.K8s.Pod != want.Pod || got.K8s.Container != want.Container {
		t.Errorf("event k8s %+v, want %+v", got.K8s, want)
	}
	if got.RCode != "ServerFailure" {
		t.Errorf("rcode %q, want ServerFailure", got.RCode)
	}
	if got.Nameserver.K8s == nil || got.Nameserver.K8s.String() != "pod/"+ns+"/"+coredns.Name {
		t.Errorf("nameserver %s, want it named pod/%s/%s", got.Nameserver, ns, coredns.Name)
	}

	tr.wait(t)
	if tr.err != nil {
		t.Fatalf("remote.Run: %v", tr.err)
	}
	a := nodeResult(t, tr.res, agentNode)
	if a.State != remote.Answered || !a.Complete || a.Received == 0 || a.Stats.Events != a.Received || a.Stats.Lost != 0 || a.Stats.Missed != 0 {
		t.Errorf("%s: %+v; want answered, complete, events received = the agent's count, 0 lost", agentNode, a)
	}
	if n := nodeResult(t, tr.res, noAgentNode); n.State != remote.NoAgent {
		t.Errorf("%s: %+v; want no agent", noAgentNode, n)
	}
	sum := strings.Join(tr.res.Summary("dns"), "\n")
	t.Logf("summary:\n%s", sum)
	for _, w := range []string{agentNode + "  answered", noAgentNode + "  no agent", "0 lost", "(nodes: 1 answered, 1 no agent)"} {
		if !strings.Contains(sum, w) {
			t.Errorf("summary lacks %q", w)
		}
	}
}

// TestClusterModeTCPRefusedAndNoMatch: a refused connection traced through
// the agent, filtered to the client pod; and a filter that matches nothing
// on the node is reported as such, not as a failure.
func TestClusterModeTCPRefusedAndNoMatch(t *testing.T) {
	bed := testbed.New(t)
	c := labtest.Cluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ns := "trace-tcp"
	labtest.CreateNamespace(t, ctx, cs, ns)
	front := bed.AddPod(ns, "store-front-1", testbed.PodOptions{})
	orders := bed.AddPod(ns, "order-service-1", testbed.PodOptions{})
	registerPod(t, ctx, cs, front, agentNode)
	registerPod(t, ctx, cs, orders, agentNode)
	bed.StartReady(front, "sleep")
	bed.StartReady(orders, "sleep")
	startLabAgent(t, c, agentNode)

	// Nothing on the node matches: the agent answers 422, reported per node.
	res, err := remote.Run(ctx, remote.Options{Agents: agentclient.New(cs, agentclient.Options{}), Gadget: wire.TCP,
		Nodes: []string{agentNode}, Params: wire.Params{Namespace: ns, PodPrefix: "nothing-", Duration: time.Second}})
	if err == nil || nodeResult(t, res, agentNode).State != remote.NoMatch || !strings.Contains(nodeResult(t, res, agentNode).Reason, "no pod matches") {
		t.Errorf("a filter matching nothing: %+v, %v; want node %s in state %q", res.Nodes, err, agentNode, remote.NoMatch)
	}

	tr := startTrace(ctx, cs, remote.Options{Gadget: wire.TCP, Nodes: []string{agentNode},
		Params: wire.Params{Namespace: ns, PodPrefix: "store-front", FailuresOnly: true, Duration: 8 * time.Second}})
	tr.waitStarted(t)
	dst := net.JoinHostPort(orders.IPv4.String(), "8080")
	p := bed.Start(front, "tcp-connect", dst, "1", "1")
	_ = p.Wait(10 * time.Second)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line := <-tr.events:
			var ev tcp.Event
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("not a tcp event: %v: %s", err, line)
			}
			if ev.K8s.Pod != front.Name && ev.K8s.Pod != "" {
				t.Errorf("event of another pod passed the filter: %+v", ev)
			}
			if ev.Error == "ECONNREFUSED" && ev.Dst.Port == 8080 {
				if ev.K8s.Node != agentNode || ev.K8s.Pod != front.Name || ev.Dst.K8s == nil || ev.Dst.K8s.String() != "pod/"+ns+"/"+orders.Name {
					t.Errorf("refused connect %+v: want node %s, pod %s, dst pod/%s/%s", ev, agentNode, front.Name, ns, orders.Name)
				}
				tr.wait(t)
				if a := nodeResult(t, tr.res, agentNode); a.State != remote.Answered || !a.Complete {
					t.Errorf("%s: %+v", agentNode, a)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no ECONNREFUSED event through the agent within 20s (%s)", fmt.Sprint(tr.res.Nodes))
		}
	}
}
