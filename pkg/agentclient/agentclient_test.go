package agentclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/agentclient"
)

func agentPod(name, node string, ready bool, created time.Time, port int32) corev1.Pod {
	p := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", CreationTimestamp: metav1.NewTime(created)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if port != 0 {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: port}}
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

// fakeAPI answers the pod list and pods/proxy like a kube-apiserver; the
// client under test is a real clientset. (The lab tests of package remote
// go through a real API server.)
func fakeAPI(t *testing.T, pods []corev1.Pod, listStatus int, proxy http.HandlerFunc) *agentclient.Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/kube-system/pods", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if listStatus != 0 {
			w.WriteHeader(listStatus)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure",
				Code: int32(listStatus), Reason: metav1.StatusReasonForbidden, Message: `pods is forbidden: User "dev" cannot list resource "pods"`})
			return
		}
		if got := r.URL.Query().Get("labelSelector"); got != agentclient.DefaultSelector {
			t.Errorf("labelSelector %q, want %q", got, agentclient.DefaultSelector)
		}
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		fs := r.URL.Query().Get("fieldSelector")
		for _, p := range pods {
			if fs == "" || fs == "spec.nodeName="+p.Spec.NodeName {
				list.Items = append(list.Items, p)
			}
		}
		_ = json.NewEncoder(w).Encode(list)
	})
	if proxy != nil {
		mux.HandleFunc("/api/v1/namespaces/kube-system/pods/{name}/proxy/{path...}", proxy)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return agentclient.New(cs, agentclient.Options{})
}

func TestAgents(t *testing.T) {
	now := time.Now()
	pods := []corev1.Pod{
		agentPod("old-n1", "n1", true, now.Add(-time.Hour), 20257),
		agentPod("new-n1", "n1", true, now, 30000),
		agentPod("unready-n2", "n2", false, now, 20257),
		agentPod("n3", "n3", true, now, 0),
	}
	term := agentPod("terminating-n4", "n4", true, now, 20257)
	term.DeletionTimestamp = &metav1.Time{Time: now}
	pods = append(pods, term)
	c := fakeAPI(t, pods, 0, nil)
	ctx := context.Background()

	agents, missing, err := c.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(names(agents)); got != "[n1/new-n1:30000 n3/n3:20257]" {
		t.Errorf("all agents: %s, want the newest ready one per node, default port without a named one", got)
	}
	if len(missing) != 0 {
		t.Errorf("missing without nodes asked: %v", missing)
	}
	agents, missing, err = c.Agents(ctx, "n3", "n2", "n4")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names(agents)) != "[n3/n3:20257]" || fmt.Sprint(missing) != "[n2 n4]" {
		t.Errorf("agents %v missing %v; want n3, missing n2 (not ready) and n4 (terminating)", names(agents), missing)
	}
	if _, err := c.Agent(ctx, "n2"); !errors.Is(err, agentclient.ErrNoAgent) || !strings.Contains(err.Error(), "deploy/agent") {
		t.Errorf("Agent(n2) = %v, want ErrNoAgent with a hint", err)
	}
	if a, err := c.Agent(ctx, "n1"); err != nil || a.Pod.Name != "new-n1" {
		t.Errorf("Agent(n1) = %v, %v", a.Pod, err)
	}
}

func names(agents []agentclient.Agent) []string {
	var out []string
	for _, a := range agents {
		out = append(out, fmt.Sprintf("%s/%s:%d", a.Node, a.Pod.Name, a.Port))
	}
	return out
}

func TestAgentsForbidden(t *testing.T) {
	c := fakeAPI(t, nil, http.StatusForbidden, nil)
	_, _, err := c.Agents(context.Background())
	if err == nil || !strings.Contains(err.Error(), "kdiag needs pods list there, and pods/proxy get") {
		t.Fatalf("err = %v, want the RBAC it needs", err)
	}
}

func TestStream(t *testing.T) {
	pods := []corev1.Pod{agentPod("agent-n1", "n1", true, time.Now(), 20257)}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string // body, or the error's text
		code    int
		fromAPI bool
	}{
		{"stream", func(w http.ResponseWriter, r *http.Request) {
			if r.PathValue("name") != "http:agent-n1:20257" || r.PathValue("path") != "gadgets/dns" || r.URL.Query().Get("namespace") != "shop" {
				t.Errorf("proxied %s %s ?%s", r.PathValue("name"), r.PathValue("path"), r.URL.RawQuery)
			}
			fmt.Fprintln(w, `{"stream":"start"}`)
		}, `{"stream":"start"}` + "\n", 0, false},
		{"agent refuses", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprintln(w, "node n1: -n shop on node n1: no pod matches the filter")
		}, "422 Unprocessable Entity: node n1: -n shop on node n1: no pod matches the filter", 422, false},
		{"RBAC denies pods/proxy", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Code: 403,
				Reason: metav1.StatusReasonForbidden, Message: `pods "agent-n1" is forbidden: User "dev" cannot get resource "pods/proxy"`})
		}, `403 Forbidden: pods "agent-n1" is forbidden: User "dev" cannot get resource "pods/proxy" in API group "" in the namespace "kube-system" (kdiag needs get on pods/proxy in the agent's namespace)`, 403, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeAPI(t, pods, 0, tt.handler)
			ctx := context.Background()
			a, err := c.Agent(ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.Stream(ctx, a, "/gadgets/dns", map[string][]string{"namespace": {"shop"}})
			if tt.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(rc)
				rc.Close()
				if string(b) != tt.want {
					t.Errorf("body %q, want %q", b, tt.want)
				}
				return
			}
			var re *agentclient.ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a ResponseError", err)
			}
			if re.Code != tt.code || re.FromAPIServer != tt.fromAPI {
				t.Errorf("code %d fromAPI %v, want %d %v", re.Code, re.FromAPIServer, tt.code, tt.fromAPI)
			}
			if !strings.Contains(err.Error(), "agent kube-system/agent-n1 on node n1") || !strings.Contains(re.Error(), strings.SplitN(tt.want, " in API group", 2)[0]) {
				t.Errorf("error %q\nwant it to name the agent and contain %q", err, tt.want)
			}
		})
	}
}
