package labtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// TestStartAgentReachableThroughPodProxy runs a stand-in agent (a plain
// HTTP server) with StartAgent and reaches it through the API server's pod
// proxy, as the CLI does; after the test the link is gone.
func TestStartAgentReachableThroughPodProxy(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	var link string
	t.Run("agent", func(t *testing.T) {
		a := labtest.StartAgent(t, c, labtest.AgentOptions{Node: "lab-node-2", Run: func(ctx context.Context, listen string) error {
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "hello from %s%s", listen, r.URL.Path)
			})}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}})
		if a.Pod.Spec.NodeName != "lab-node-2" || a.Pod.Status.PodIP != a.Addr.Addr().String() || !labtest.PodReady(a.Pod) {
			t.Fatalf("agent pod: node %q podIP %q ready %v; want lab-node-2, %s, ready", a.Pod.Spec.NodeName, a.Pod.Status.PodIP, labtest.PodReady(a.Pod), a.Addr.Addr())
		}
		if a.Addr.Addr().IsLoopback() {
			t.Fatalf("agent address %s is loopback: the API server would refuse to proxy", a.Addr)
		}
		body, err := cs.CoreV1().Pods(a.Pod.Namespace).ProxyGet("http", a.Pod.Name, strconv.Itoa(int(a.Addr.Port())), "/probe", nil).DoRaw(ctx)
		if err != nil {
			t.Fatalf("GET /probe through pods/proxy: %v", err)
		}
		if want := "hello from " + a.Addr.String() + "/probe"; string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
		// Remember the link to check it is removed.
		out, err := exec.Command("ip", "-o", "addr", "show", "to", a.Addr.Addr().String()+"/32").Output()
		if err != nil || len(strings.Fields(string(out))) < 2 {
			t.Fatalf("no link holds %s: %v %q", a.Addr.Addr(), err, out)
		}
		link = strings.TrimSuffix(strings.Fields(string(out))[1], ":")
	})
	if link == "" {
		return
	}
	if err := exec.Command("ip", "link", "show", link).Run(); err == nil {
		t.Errorf("link %s still exists after the test", link)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(labtest.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: labtest.AgentLabelKey + "=" + labtest.AgentLabel})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent pods left after the test: %v %v", pods, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
