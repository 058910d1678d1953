package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
	"github.com/kdiag/kdiag/pkg/lab/programs"
	"github.com/kdiag/kdiag/pkg/lab/scenario"
)

// user runs the tutorial's commands with the lab's kubeconfig.
type user struct {
	t       *testing.T
	kdiag   string
	kubectl string
	env     []string
}

// run runs a command to completion and returns its stdout; it fails the
// test when the command fails.
func (u *user) run(ctx context.Context, name string, args ...string) string {
	u.t.Helper()
	out, errOut, err := u.try(ctx, name, args...)
	if err != nil {
		u.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// try runs a command and returns stdout, stderr and its error.
func (u *user) try(ctx context.Context, name string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), u.env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// logsSince returns the lines of a Deployment's container log whose time=
// is at or after since. It filters by itself rather than with kubectl's
// --since, so that the check does not depend on how the lab's kubelet
// serves that option.
func (u *user) logsSince(ctx context.Context, deploy string, since time.Time) (string, error) {
	out, errOut, err := u.try(ctx, u.kubectl, "logs", "-n", "shop", "deploy/"+deploy)
	if err != nil {
		return "", fmt.Errorf("kubectl logs deploy/%s: %v: %s", deploy, err, errOut)
	}
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && !ts.Before(since) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n"), nil
}

// logTime is the time stamp of a program's log line.
var logTime = regexp.MustCompile(`^time=(\S+) `)

// eventually polls fn every second until it returns "" (done) or the
// timeout passes; then it fails with fn's last complaint.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := fn()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, msg)
		}
		time.Sleep(time.Second)
	}
}

// jsonLines decodes one JSON object per line.
func jsonLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var evs []T
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ev T
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("trace output is not JSON lines: %v: %q", err, line)
		}
		evs = append(evs, ev)
	}
	return evs
}

// peer is how a trace names an address.
type peer struct {
	Addr string `json:"addr"`
	Port int    `json:"port"`
	K8s  *struct {
		Kind, Namespace, Name string
	} `json:"k8s"`
}

func (p peer) String() string {
	if p.K8s == nil {
		return fmt.Sprintf("%s:%d", p.Addr, p.Port)
	}
	return fmt.Sprintf("%s/%s/%s:%d", p.K8s.Kind, p.K8s.Namespace, p.K8s.Name, p.Port)
}

// where is the Kubernetes identity of a traced process.
type where struct {
	Node, Namespace, Pod, Container string
}

type tcpEvent struct {
	Type  string `json:"type"`
	Error string `json:"error"`
	Src   peer   `json:"src"`
	Dst   peer   `json:"dst"`
	K8s   where  `json:"k8s"`
}

type dnsEvent struct {
	Type       string `json:"type"`
	QR         string `json:"qr"`
	Name       string `json:"name"`
	RCode      string `json:"rcode"`
	Unanswered bool   `json:"unanswered"`
	Nameserver peer   `json:"nameserver"`
	K8s        where  `json:"k8s"`
}

// trace runs a kdiag trace for d in the background; wait returns its
// output.
func (u *user) trace(ctx context.Context, d time.Duration, args ...string) (wait func() string) {
	var out string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a := append(append([]string{"trace"}, args...), "-o", "json", "--duration", d.String())
		o, e, err := u.try(ctx, u.kdiag, a...)
		if err != nil {
			out = fmt.Sprintf("ERROR %v: %s", err, e)
			return
		}
		out = o
	}()
	return func() string {
		wg.Wait()
		if strings.HasPrefix(out, "ERROR ") {
			u.t.Fatalf("kdiag trace %s: %s", strings.Join(args, " "), out)
		}
		return out
	}
}

// The tutorial, end to end: both network stories of the seed on real
// pods, from the symptom in the logs through doctor and the traces to the
// fix and the silence after it.
func TestStoreDemoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with a real lab and real pods; skipped with -short")
	}
	if err := podnet.Check(); err != nil {
		t.Skipf("end-to-end test of real lab pods: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := binaries.Ensure(ctx, binaries.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kdiag := filepath.Join(t.TempDir(), "kdiag")
	build := exec.CommandContext(ctx, "go", "build", "-o", kdiag, "../cmd/kdiag")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kdiag: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	u := &user{t: t, kdiag: kdiag, kubectl: bins.Path(binaries.Kubectl)}

	// 1. sudo kdiag lab up --scenario store-demo
	up := u.run(ctx, kdiag, "lab", "up", "--dir", dir, "--scenario", "store-demo")
	t.Cleanup(func() {
		if _, e, err := u.try(context.Background(), kdiag, "lab", "down", "--dir", dir); err != nil {
			t.Errorf("kdiag lab down: %v\n%s", err, e)
		}
	})
	m := regexp.MustCompile(`export KUBECONFIG=(\S+)`).FindStringSubmatch(up)
	if m == nil {
		t.Fatalf("kdiag lab up printed no KUBECONFIG: %q", up)
	}
	u.env = append(u.env, "KUBECONFIG="+m[1])
	// No NODE_NAME: the lab labels its nodes with this machine's id, so
	// kdiag trace knows that their pods run in this kernel, and labels
	// each event with its pod's node.
	node := strings.TrimSpace(u.run(ctx, u.kubectl, "get", "pods", "-n", "shop", "-l", "app=store-front", "-o", "jsonpath={.items[0].spec.nodeName}"))

	// 2. The symptoms in the logs.
	eventually(t, 90*time.Second, "store-front logs connection refused for order-service", func() string {
		logs, err := u.logsSince(ctx, "store-front", time.Now().Add(-20*time.Second))
		if err != nil {
			return err.Error()
		}
		if !regexp.MustCompile(`msg="request failed" url=http://order-service:3000/ err=".*connect: connection refused"`).MatchString(logs) {
			return "no refused request in:\n" + logs
		}
		return ""
	})
	eventually(t, 90*time.Second, "order-service logs the checkout name's resolution failure", func() string {
		logs, err := u.logsSince(ctx, "order-service", time.Now().Add(-30*time.Second))
		if err != nil {
			return err.Error()
		}
		if !regexp.MustCompile(`msg="resolve failed" name=` + regexp.QuoteMeta(scenario.CheckoutHost) + ` .*server misbehaving \(SERVFAIL\)`).MatchString(logs) {
			return "no SERVFAIL for " + scenario.CheckoutHost + " in:\n" + logs
		}
		if !regexp.MustCompile(`msg=resolved name=` + regexp.QuoteMeta(scenario.PaymentsStatusHost)).MatchString(u.run(ctx, u.kubectl, "logs", "-n", "shop", "deploy/order-service")) {
			return "the other payments name was never resolved"
		}
		return ""
	})

	// 3. kdiag doctor names the Service and both ports, and maps DNS.
	doc, _, _ := u.try(ctx, kdiag, "doctor", "-o", "json") // exits non-zero: findings
	var rep struct {
		Findings []struct {
			ID       string   `json:"id"`
			Title    string   `json:"title"`
			Evidence []string `json:"evidence"`
			Object   struct{ Namespace, Name string }
			Remedies []struct {
				Command string                   `json:"command"`
				DryRun  *struct{ Status string } `json:"dryRun"`
			} `json:"remediation"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(doc), &rep); err != nil {
		t.Fatalf("kdiag doctor -o json: %v\n%s", err, doc)
	}
	var fix string
	var sawUpstreams bool
	for _, f := range rep.Findings {
		switch {
		case f.ID == "service-target-port-mismatch" && f.Object.Namespace == "shop" && f.Object.Name == "order-service":
			if !strings.Contains(f.Title, "targetPort 8080") || !strings.Contains(f.Title, "3000") {
				t.Errorf("port finding does not name both ports: %q", f.Title)
			}
			if len(f.Remedies) > 0 && f.Remedies[0].DryRun != nil && f.Remedies[0].DryRun.Status == "passed" {
				fix = f.Remedies[0].Command
			}
		case f.ID == "dns-upstreams":
			sawUpstreams = strings.Contains(f.Title, "payments.example. -> "+programs.NodeDNSAddr)
		}
	}
	if fix == "" {
		t.Fatalf("doctor has no dry-run-checked fix for Service shop/order-service:\n%s", doc)
	}
	if !sawUpstreams {
		t.Errorf("doctor's dns-upstreams does not map payments.example to %s:\n%s", programs.NodeDNSAddr, doc)
	}

	// 4. The traces, all at once.
	tcpWait := u.trace(ctx, 10*time.Second, "tcp", "-n", "shop", "-p", "store-front", "--failures-only")
	shopWait := u.trace(ctx, 25*time.Second, "dns", "-n", "shop", "--timeout", "7s")
	sysWait := u.trace(ctx, 25*time.Second, "dns", "-n", "kube-system")
	var refused int
	for _, ev := range jsonLines[tcpEvent](t, tcpWait()) {
		if ev.Type == "connect" && ev.Error == "ECONNREFUSED" {
			refused++
			if ev.K8s.Namespace != "shop" || !strings.HasPrefix(ev.K8s.Pod, "store-front-") || ev.K8s.Node != node {
				t.Errorf("refused connect labelled %+v, want pod shop/store-front-* on %s", ev.K8s, node)
			}
			if got := ev.Dst.String(); got != "svc/shop/order-service:3000" {
				t.Errorf("refused connect to %s, want svc/shop/order-service:3000", got)
			}
		}
	}
	if refused < 5 {
		t.Errorf("10s of tcp trace saw %d refused connects from store-front, want one a second", refused)
	}
	var servfail int
	for _, ev := range jsonLines[dnsEvent](t, shopWait()) {
		if ev.QR == "R" && ev.RCode == "ServerFailure" && strings.TrimSuffix(ev.Name, ".") == scenario.CheckoutHost {
			servfail++
			if !strings.HasPrefix(ev.K8s.Pod, "order-service-") || ev.Nameserver.K8s == nil || ev.Nameserver.K8s.Name != "kube-dns" {
				t.Errorf("SERVFAIL event labelled pod %+v, nameserver %s; want order-service and svc/kube-system/kube-dns", ev.K8s, ev.Nameserver)
			}
		}
	}
	if servfail == 0 {
		t.Errorf("trace dns -n shop saw no SERVFAIL for %s from kube-dns", scenario.CheckoutHost)
	}
	var unanswered, answered int
	for _, ev := range jsonLines[dnsEvent](t, sysWait()) {
		name := strings.TrimSuffix(ev.Name, ".")
		if ev.Nameserver.Addr != programs.NodeDNSAddr {
			continue
		}
		if !strings.HasPrefix(ev.K8s.Pod, "coredns-") || ev.K8s.Namespace != "kube-system" {
			t.Errorf("upstream query labelled %+v, want a kube-system/coredns-* pod", ev.K8s)
		}
		switch {
		case ev.Unanswered && name == scenario.CheckoutHost:
			unanswered++
		case ev.Unanswered:
			t.Errorf("the upstream left %s unanswered; it drops only %s", name, scenario.CheckoutHost)
		case ev.QR == "R" && ev.RCode == "Success" && name == scenario.PaymentsStatusHost:
			answered++
		}
	}
	if unanswered == 0 || answered == 0 {
		t.Errorf("trace dns -n kube-system: %d unanswered queries for %s and %d answers for %s, want both", unanswered, scenario.CheckoutHost, answered, scenario.PaymentsStatusHost)
	}

	// 5. The fixes: doctor's patch for the Service; the upstream's owner
	// stops dropping the checkout name.
	u.run(ctx, "sh", "-c", fix)
	if err := programs.WriteUpstreamConfig(programs.UpstreamConfigFile(dir), programs.UpstreamConfig{Answer: scenario.StoreDemoUpstream().Answer}); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()

	// 6. Silence: no refused connect, no failure in the logs, no SERVFAIL.
	quiet := func(deploy, failure, success string, window time.Duration) func() string {
		return func() string {
			since, err := u.logsSince(ctx, deploy, fixed)
			if err != nil {
				return err.Error()
			}
			recent, err := u.logsSince(ctx, deploy, time.Now().Add(-window))
			if err != nil {
				return err.Error()
			}
			if strings.Contains(recent, failure) {
				return "still failing:\n" + recent
			}
			if !strings.Contains(since, success) {
				return fmt.Sprintf("no %q since the fix:\n%s", success, since)
			}
			return ""
		}
	}
	eventually(t, 60*time.Second, "store-front's calls to order-service succeed",
		quiet("store-front", "request failed", `msg="request succeeded" url=http://order-service:3000/`, 5*time.Second))
	eventually(t, 60*time.Second, "order-service resolves the checkout name",
		quiet("order-service", "resolve failed", "msg=resolved name="+scenario.CheckoutHost, 12*time.Second))
	tcpWait = u.trace(ctx, 8*time.Second, "tcp", "-n", "shop", "-p", "store-front", "--failures-only")
	shopWait = u.trace(ctx, 12*time.Second, "dns", "-n", "shop", "--timeout", "7s")
	for _, ev := range jsonLines[tcpEvent](t, tcpWait()) {
		t.Errorf("after the fix, store-front still fails: %+v", ev)
	}
	var noerror int
	for _, ev := range jsonLines[dnsEvent](t, shopWait()) {
		if ev.RCode == "ServerFailure" || ev.Unanswered {
			t.Errorf("after the fix, DNS still fails: %+v", ev)
		}
		if ev.RCode == "Success" && strings.TrimSuffix(ev.Name, ".") == scenario.CheckoutHost {
			noerror++
		}
	}
	if noerror == 0 {
		t.Errorf("after the fix, no answer for %s in 12s of trace", scenario.CheckoutHost)
	}
}
