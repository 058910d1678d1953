package programs_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/programs"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Program: func(ctx context.Context, name string, args []string) error {
		return programs.Run(ctx, name, programs.Env{Out: os.Stdout}, args)
	}})
}

// The lab's CoreDNS build runs the AKS-style configuration of store-demo
// through CoreDNSResolver against the lab's API server: the kubernetes
// plugin answers a Service through the written kubeconfig, the custom
// server block forwards to the upstream, and the dropped name comes back
// as SERVFAIL while the upstream answers the others. CoreDNS runs on the
// host here (no pod network), so the Corefile binds loopback ports.
func TestCoreDNSResolverRunsCoreDNSAgainstTheLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the upstream DNS server listens on port 53 (the port a resolv.conf implies), which needs root")
	}
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	cs := kubernetes.NewForConfigOrDie(cfg)
	bins, err := binaries.Ensure(ctx, binaries.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// CoreDNS's service account and RBAC, as in the scenario.
	ns := metav1.NamespaceSystem
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns-test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns-test", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-test-slices"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"", "discovery.k8s.io"}, Resources: []string{"endpoints", "services", "pods", "namespaces", "endpointslices"}, Verbs: []string{"list", "watch"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-test-slices"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "coredns-test-slices"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns-test", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "order-service"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 3000, TargetPort: intstr.FromInt32(3000)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-test"},
		Spec: corev1.PodSpec{ServiceAccountName: "coredns-test", Containers: []corev1.Container{{
			Name: "coredns", Image: "mcr.microsoft.com/oss/kubernetes/coredns:v1.12.1", Args: []string{"-conf", "/etc/coredns/Corefile"},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The upstream, where the node's resolver would be.
	upstreamIP := "127.0.0.153"
	uctx, ustop := context.WithCancel(ctx)
	defer ustop()
	ulog := &lockedBuf{}
	go func() {
		_ = programs.Run(uctx, programs.UpstreamDNS, programs.Env{Vars: []string{}, Out: ulog}, []string{
			"--listen", upstreamIP + ":53", "--answer", "payments.example=203.0.113.10", "--drop", "api.payments.example", "--answer", "www.example.org=203.0.113.20",
		})
	}()

	port := freeLoopbackPort(t)
	health, ready, metrics := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	// The scenario's Corefile and coredns-custom, on loopback ports.
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:%d
    health 127.0.0.1:%d
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus 127.0.0.1:%d
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    import custom/*.override
}
import custom/*.server
`, port, ready, health, metrics)
	vol, custom := t.TempDir(), t.TempDir()
	write(t, filepath.Join(vol, "Corefile"), corefile)
	write(t, filepath.Join(custom, "payments.server"), fmt.Sprintf("payments.example:%d {\n    bind 127.0.0.1\n    errors\n    forward . %s\n}\n", port, upstreamIP))
	write(t, filepath.Join(custom, "log.override"), "log\n")

	resolve := programs.CoreDNSResolver(programs.CoreDNSOptions{
		Binary: bins.Path(binaries.CoreDNS), Dir: t.TempDir(),
		APIServer: cfg.Host, CAData: cfg.CAData, Client: cs, NodeDNS: upstreamIP,
	})
	cmd, ok, err := resolve(ctx, pod, &pod.Spec.Containers[0], map[string]string{"/etc/coredns": vol, "/etc/coredns/custom": custom})
	if err != nil || !ok {
		t.Fatalf("resolve CoreDNS: ok=%v err=%v", ok, err)
	}
	out := &lockedBuf{}
	proc := exec.CommandContext(ctx, cmd.Path, cmd.Args...)
	proc.Dir, proc.Stdout, proc.Stderr = cmd.Dir, out, out
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = proc.Process.Kill(); _ = proc.Wait() }()

	server := fmt.Sprintf("127.0.0.1:%d", port)
	ask := func(name string, timeout time.Duration) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		r, _, err := (&dns.Client{Timeout: timeout}).Exchange(m, server)
		return r, err
	}
	// The kubernetes plugin is ready once it has listed Services.
	var r *dns.Msg
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err = ask("order-service.default.svc.cluster.local", time.Second)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CoreDNS never answered the Service (last: %v, %v); its output:\n%s", r, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got := r.Answer[0].(*dns.A).A.String(); got != svc.Spec.ClusterIP {
		t.Errorf("order-service resolved to %s, want its clusterIP %s", got, svc.Spec.ClusterIP)
	}
	// /etc/resolv.conf became the upstream.
	if r, err := ask("www.example.org", 3*time.Second); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("www.example.org through forward . /etc/resolv.conf: %v, %v; want the upstream's answer\n%s", r, err, out)
	}
	// coredns-custom's zone: answered, and the dropped name turns SERVFAIL.
	if r, err := ask("status.payments.example", 3*time.Second); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("status.payments.example: %v, %v; want the upstream's answer", r, err)
	}
	r, err = ask("api.payments.example", 10*time.Second)
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Errorf("api.payments.example: %v, %v; want SERVFAIL from CoreDNS", r, err)
	}
	if !strings.Contains(ulog.String(), "name=api.payments.example. type=A from=127.0.0.1") || !strings.Contains(ulog.String(), "action=drop") {
		t.Errorf("the upstream did not log the dropped query:\n%s", ulog)
	}
	// The errors plugin of the custom block logs the upstream's silence;
	// the log plugin (coredns-custom's log.override) the default block's
	// queries.
	// CoreDNS writes the error line after it has answered SERVFAIL: give
	// it a moment.
	for _, want := range []string{"[ERROR] plugin/errors: 2 api.payments.example. A: read udp", "->" + upstreamIP + ":53: i/o timeout", `"A IN order-service.default.svc.cluster.local. udp`} {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), want) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("CoreDNS's output lacks %q:\n%s", want, out)
		}
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// freeLoopbackPort returns a port free for both UDP and TCP on 127.0.0.1.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = pc.Close()
		if err == nil {
			_ = ln.Close()
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// lockedBuf is a bytes.Buffer safe for concurrent writers.
type lockedBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
