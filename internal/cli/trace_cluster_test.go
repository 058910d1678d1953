package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// clusterAPI is a stand-in kube-apiserver for the trace command's cluster
// mode: two nodes, an agent pod on n1 only, and n1's gadget stream behind
// pods/proxy. (pkg/gadget/remote's lab tests use a real API server and a
// real agent; this checks the command's wiring and output.)
func clusterAPI(t *testing.T, stream string) (kubeconfig string, queries chan string) {
	t.Helper()
	queries = make(chan string, 10)
	enc := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, _ *http.Request) {
		enc(w, corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"},
			Items: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n2"}}}})
	})
	mux.HandleFunc("GET /api/v1/namespaces/kube-system/pods", func(w http.ResponseWriter, _ *http.Request) {
		enc(w, corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: []corev1.Pod{{
			ObjectMeta: metav1.ObjectMeta{Name: "kdiag-agent-x", Namespace: "kube-system"},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 20257}}}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}}})
	})
	mux.HandleFunc("GET /api/v1/namespaces/kube-system/pods/http:kdiag-agent-x:20257/proxy/gadgets/{gadget}", func(w http.ResponseWriter, r *http.Request) {
		queries <- r.PathValue("gadget") + "?" + r.URL.RawQuery
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprint(w, stream)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: %q}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n", srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, queries
}

func TestTraceClusterMode(t *testing.T) {
	const ev = `{"time":"2026-11-28T10:00:00Z","type":"response","qr":"R","error":"ServerFailure","id":7,"name":"api.example.","qtype":"A","rcode":"ServerFailure","nameserver":{"addr":"10.96.0.10","port":53,"k8s":{"kind":"svc","namespace":"kube-system","name":"kube-dns"}},"src":{"addr":"10.96.0.10","port":53},"dst":{"addr":"10.240.0.5","port":40000},"direction":"ingress","protocol":"udp","k8s":{"node":"n1","namespace":"shop","pod":"checkout-1","container":"app"}}`
	stream := `{"stream":"start","node":"n1","gadget":"dns"}` + "\n" + ev + "\n" +
		`{"stream":"end","node":"n1","stats":{"events":1,"lost":3,"missed":0,"filtered":0}}` + "\n"
	tests := []struct {
		name      string
		args      []string
		stdout    []string
		stderr    []string
		wantQuery string
	}{
		{"json, --node", []string{"trace", "dns", "--node", "n1,n2", "-n", "shop", "-o", "json", "--timeout", "5s", "--duration", "1m"},
			[]string{ev + "\n"},
			[]string{"dns: cluster mode (--node)", "tracing on 1 node(s): n1; not tracing: n2 (no agent)", "n1  answered", "1 events, 3 lost", "n2  no agent", "dns: 1 events, 3 lost (nodes: 1 answered, 1 no agent)"},
			"dns?duration=1m0s&namespace=shop&ports=53&ringMiB=8&timeout=5s"},
		{"table, --all-nodes", []string{"trace", "dns", "--all-nodes"},
			[]string{"NODE", "n1", "shop", "checkout-1", "ServerFailure", "svc/kube-system/kube-dns:53"},
			[]string{"cluster mode (--all-nodes)", "(nodes: 1 answered, 1 no agent)"},
			"dns?ports=53&ringMiB=8&timeout=2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kubeconfig, queries := clusterAPI(t, stream)
			var out, errOut bytes.Buffer
			root := traceRoot(&out, &errOut)
			root.SetArgs(append(tt.args, "--kubeconfig", kubeconfig))
			if err := root.Execute(); err != nil {
				t.Fatalf("trace: %v\nstderr:\n%s", err, errOut.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			if strings.HasPrefix(tt.name, "json") && out.String() != ev+"\n" {
				t.Errorf("-o json stdout must be exactly the events:\n%s", out.String())
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
			if q := <-queries; q != tt.wantQuery {
				t.Errorf("agent asked for %q, want %q", q, tt.wantQuery)
			}
		})
	}
}

func TestTraceClusterModeFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace", "tcp", "--all-nodes", "--no-k8s"}, "cannot be combined with --no-k8s"},
		{[]string{"trace", "tcp", "--all-nodes", "--node", "a"}, "exclude each other"},
		{[]string{"trace", "tcp", "--local", "--node", "surely-not-this-host"}, "--local traces only this machine"},
	}
	kubeconfig, _ := clusterAPI(t, "")
	tests = append(tests, struct {
		args []string
		want string
	}{[]string{"trace", "dns", "--all-nodes", "--ring-mib", "64", "--kubeconfig", kubeconfig}, "at most 32 in cluster mode"})
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := traceRoot(&out, &errOut)
			args := tt.args
			if !slices.Contains(args, "--kubeconfig") {
				args = append(args, "--kubeconfig", filepath.Join(t.TempDir(), "none"))
			}
			root.SetArgs(args)
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
