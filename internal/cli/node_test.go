package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
)

// fakeNodeAPI is an API server with nodes n1 (whose agent pods may not be
// listed), n2 (no agent, a stored report) and n3 (no agent, no report).
func fakeNodeAPI(t *testing.T) string {
	t.Helper()
	status := func(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
	}
	obj := func(w http.ResponseWriter, o any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(o)
	}
	rep := &diagnose.Report{Node: "n2", Time: time.Now().Add(-time.Hour), Trigger: "Ready is not True (KubeletNotReady)",
		Verdict: diagnose.Verdict{Culprit: diagnose.CulpritKubelet, Rule: "kubelet-down", Summary: "kubelet: kubelet is not running (no process named kubelet)"}}
	cm, err := rep.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	cm.TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sel := r.URL.Query().Get("fieldSelector")
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/v1/nodes/"):
			name := strings.TrimPrefix(r.URL.Path, "/api/v1/nodes/")
			if name == "missing" {
				status(w, 404, metav1.StatusReasonNotFound, `nodes "missing" not found`)
				return
			}
			obj(w, corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: name}})
		case r.URL.Path == "/api/v1/namespaces/kube-system/pods" && strings.Contains(sel, "n1"):
			status(w, 403, metav1.StatusReasonForbidden, `pods is forbidden: User "dev" cannot list resource "pods" in API group "" in the namespace "kube-system"`)
		case r.URL.Path == "/api/v1/namespaces/kube-system/pods":
			obj(w, corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}})
		case r.URL.Path == "/api/v1/namespaces/kube-system/configmaps/"+diagnose.ConfigMapName("n2"):
			obj(w, cm)
		case strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/configmaps/"):
			status(w, 404, metav1.StatusReasonNotFound, "configmaps not found")
		default:
			status(w, 404, metav1.StatusReasonNotFound, r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestNodeDiagnose(t *testing.T) {
	url := fakeNodeAPI(t)
	tests := []struct {
		name               string
		args               []string
		wantErr, wantOut   string
		wantStderr, notOut string
	}{
		{name: "node not found", args: []string{"missing"}, wantErr: `node "missing" not found`},
		{name: "RBAC forbidden", args: []string{"n1"}, wantErr: "kdiag needs pods list there, and pods/proxy get"},
		{name: "no agent: stored fallback, said on stderr", args: []string{"n2"},
			wantOut: "kubelet: kubelet is not running", wantStderr: "no agent answered", notOut: "no agent answered"},
		{name: "stored as JSON", args: []string{"n2", "--stored", "-o", "json"}, wantOut: `"culprit": "kubelet"`},
		{name: "stored as YAML", args: []string{"n2", "--stored", "-o", "yaml"}, wantOut: "culprit: kubelet"},
		{name: "no agent, no report", args: []string{"n3"}, wantErr: "no ready kdiag agent pod"},
		{name: "stored, none", args: []string{"n3", "--stored"}, wantErr: "no stored node report"},
		{name: "bad output", args: []string{"n2", "-o", "xml"}, wantErr: `--output="xml": want text, json or yaml`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"node", "diagnose", "--server", url, "--timeout", "10s"}, tc.args...)
			out, stderr, err := runCLI(t, args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v (stderr %s)", err, stderr)
			}
			if !strings.Contains(out, tc.wantOut) || (tc.notOut != "" && strings.Contains(out, tc.notOut)) {
				t.Errorf("stdout lacks %q (or holds %q):\n%s", tc.wantOut, tc.notOut, out)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
		})
	}
	if _, _, err := runCLI(t, "node", "diagnose"); err == nil || !strings.Contains(err.Error(), "accepts 1 arg") {
		t.Errorf("no NODE: error %v, want an argument count error", err)
	}
}
