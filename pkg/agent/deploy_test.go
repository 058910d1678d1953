package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// manifests reads the objects of a multi-document YAML file under
// deploy/agent.
func manifests(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	return labtest.Manifests(t, "../../deploy/agent/"+name)
}

func TestManifestsPassServerSideDryRun(t *testing.T) {
	c := labtest.Cluster(t)
	for _, f := range []string{"rbac.yaml", "daemonset.yaml"} {
		labtest.ApplyManifests(t, c.RESTConfig(), "../../deploy/agent/"+f, true)
	}
}

// TestAgentWorksWithExactlyItsClusterRole runs the agent as a user bound to
// nothing but deploy/agent/rbac.yaml's ClusterRole and checks that every
// API write succeeds.
func TestAgentWorksWithExactlyItsClusterRole(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.RESTConfig())
	var role rbacv1.ClusterRole
	var nsRole rbacv1.Role
	for _, u := range manifests(t, "rbac.yaml") {
		b, _ := u.MarshalJSON()
		switch u.GetKind() {
		case "ClusterRole":
			if err := yaml.Unmarshal(b, &role); err != nil {
				t.Fatal(err)
			}
		case "Role":
			if err := yaml.Unmarshal(b, &nsRole); err != nil {
				t.Fatal(err)
			}
		}
	}
	if nsRole.Namespace != "kube-system" {
		t.Fatalf("rbac.yaml: the Role is in %q, want kube-system", nsRole.Namespace)
	}
	marker := fmt.Sprintf("kq%06d", rand.IntN(1000000))
	role.Name = "kdiag-agent-" + marker
	user := "kdiag-agent-" + marker
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	nsRole.Name, nsRole.ResourceVersion = role.Name, ""
	if _, err := admin.RbacV1().Roles("kube-system").Create(ctx, &nsRole, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().Roles("kube-system").Delete(context.Background(), nsRole.Name, metav1.DeleteOptions{})
	})
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: "kube-system"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: nsRole.Name},
		Subjects: binding.Subjects}
	if _, err := admin.RbacV1().RoleBindings("kube-system").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().RoleBindings("kube-system").Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
	})
	cfg, err := c.ClientCertConfig(user, nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{writeConfig(t, t.TempDir(), "test.json", testConfig(marker))}
	deleteReport(t, admin)
	// The read-only remount below turns a condition True: the agent records
	// a NotReady diagnostic and stores it with its Role.
	a, _ := startAgent(t, cfg, Options{ConfigFiles: files, DisablePSI: true, Disk: disk.Options{Paths: []string{t.TempDir()}},
		Diagnose: quickDiagnose(), ReportInterval: time.Hour})
	kmsg(t, "EXT4-fs ("+marker+"): Remounting filesystem read-only")
	waitUntil(t, 5*time.Second, "ReadonlyFilesystem True written with the agent's role", func() (bool, error) {
		c, err := nodeCondition(ctx, admin, "ReadonlyFilesystem")
		return c.Status == corev1.ConditionTrue && strings.Contains(c.Message, marker), err
	})
	waitUntil(t, 5*time.Second, "the node event written with the agent's role", func() (bool, error) {
		return hasEvent(ctx, admin, "default", "Node", node, "FilesystemIsReadOnly", marker)
	})
	waitUntil(t, 15*time.Second, "the node report stored with the agent's role", func() (bool, error) {
		r, err := diagnose.Load(ctx, admin, node)
		return err == nil && strings.Contains(r.Trigger, "ReadonlyFilesystem=True"), err
	})
	kmsg(t, "EXT4-fs ("+marker+"): re-mounted r/w")
	waitUntil(t, 5*time.Second, "ReadonlyFilesystem cleared", func() (bool, error) {
		c, err := nodeCondition(ctx, admin, "ReadonlyFilesystem")
		return c.Status == corev1.ConditionFalse, err
	})
	if _, body := get(a.Addr(), "/metrics"); strings.Contains(body, `result="error"`) {
		t.Errorf("API writes failed with the agent's role:\n%s", grep(body, `result="error"`))
	}
	for _, p := range a.Problems() {
		if strings.Contains(p, "forbidden") {
			t.Errorf("RBAC problem: %s", p)
		}
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRBACDenialIsReported runs the agent as a user that may read its
// Node but not patch its status: the agent keeps running and /healthz
// says why the conditions are not written.
func TestRBACDenialIsReported(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.RESTConfig())
	marker := fmt.Sprintf("kn%06d", rand.IntN(1000000))
	name := "kdiag-agent-readonly-" + marker
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
	}}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: name}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	cfg, err := c.ClientCertConfig(name, nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{writeConfig(t, t.TempDir(), "test.json", testConfig(marker))}
	a, _ := startAgent(t, cfg, Options{ConfigFiles: files, DisablePSI: true})
	var body string
	waitUntil(t, 5*time.Second, "/healthz reporting the forbidden patch", func() (bool, error) {
		var code int
		code, body = get(a.Addr(), "/healthz")
		return code == 200 && strings.Contains(body, "node conditions not written") && strings.Contains(body, "forbidden"), nil
	})
	t.Logf("/healthz:\n%s", body)
}

// TestDaemonSetMountsAreReadOnlyAndJustified checks the least-privilege
// rules of daemonset.yaml: every host mount is read-only and has a comment
// above it saying why, and host network is justified too.
func TestDaemonSetMountsAreReadOnlyAndJustified(t *testing.T) {
	var ds struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	for _, u := range manifests(t, "daemonset.yaml") {
		b, _ := u.MarshalJSON()
		if err := yaml.Unmarshal(b, &ds); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile("../../deploy/agent/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	commented := func(prefix string) bool {
		for i, l := range lines {
			if strings.TrimSpace(l) == prefix {
				return i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#")
			}
		}
		return false
	}
	spec := ds.Spec.Template.Spec
	seen := map[string]bool{}
	for _, m := range spec.Containers[0].VolumeMounts {
		seen[m.Name] = true
		if !m.ReadOnly {
			t.Errorf("volume mount %s (%s) is not read-only", m.Name, m.MountPath)
		}
		if !commented("- name: " + m.Name) {
			t.Errorf("volume mount %s has no comment above it saying why the agent needs it", m.Name)
		}
	}
	for _, want := range []string{"proc", "kubelet-dir", "containerd-dir", "cgroup", "log"} {
		if !seen[want] {
			t.Errorf("no volume mount %s: the disk monitor and the diagnostic read it", want)
		}
	}
	if spec.HostNetwork && !commented("hostNetwork: true") {
		t.Errorf("hostNetwork without a comment saying why")
	}
	if spec.HostPID || spec.HostIPC {
		t.Errorf("hostPID/hostIPC set: the agent reads the host's /proc from a read-only mount instead")
	}
}

// TestReportPolicyConfinesTheAgentsWrites applies rbac.yaml's
// ValidatingAdmissionPolicy, matched to a test user instead of the agent's
// service account, and checks what it lets that user write in kube-system:
// only report ConfigMaps, and only its own node's when its credentials
// name a node.
func TestReportPolicyConfinesTheAgentsWrites(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	admin := dynamic.NewForConfigOrDie(c.RESTConfig())
	marker := fmt.Sprintf("kp%06d", rand.IntN(1000000))
	user := "kdiag-agent-" + marker
	policy := "kdiag-agent-node-reports-" + marker
	for _, u := range manifests(t, "rbac.yaml") {
		switch u.GetKind() {
		case "ValidatingAdmissionPolicy":
			conds, _, _ := unstructured.NestedSlice(u.Object, "spec", "matchConditions")
			cond := conds[0].(map[string]any)
			cond["expression"] = strings.Replace(cond["expression"].(string), "system:serviceaccount:kube-system:kdiag-agent", user, 1)
			if cond["expression"] == conds[0] {
				t.Fatal("the policy's match condition does not name the agent's service account")
			}
			_ = unstructured.SetNestedSlice(u.Object, conds, "spec", "matchConditions")
		case "ValidatingAdmissionPolicyBinding":
			_ = unstructured.SetNestedField(u.Object, policy, "spec", "policyName")
		default:
			continue
		}
		u.SetName(policy)
		gvr := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"}
		if u.GetKind() == "ValidatingAdmissionPolicyBinding" {
			gvr.Resource = "validatingadmissionpolicybindings"
		}
		if _, err := admin.Resource(gvr).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", u.GetKind(), err)
		}
		t.Cleanup(func() { _ = admin.Resource(gvr).Delete(context.Background(), policy, metav1.DeleteOptions{}) })
	}
	as := func(node string) kubernetes.Interface {
		cfg := rest.CopyConfig(c.RESTConfig())
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}}
		if node != "" {
			cfg.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": {node}}
		}
		return kubernetes.NewForConfigOrDie(cfg)
	}
	cms := kubernetes.NewForConfigOrDie(c.RESTConfig()).CoreV1().ConfigMaps("kube-system")
	write := func(cs kubernetes.Interface, name string, labelled bool) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"}, Data: map[string]string{"k": "v"}}
		if labelled {
			cm.Labels = map[string]string{"kdiag.io/node-report": "true"}
		}
		_, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{})
		if err == nil {
			t.Cleanup(func() { _ = cms.Delete(context.Background(), name, metav1.DeleteOptions{}) })
		}
		return err
	}
	waitUntil(t, 15*time.Second, "the policy denying the user a ConfigMap that is no report", func() (bool, error) {
		err := write(as(""), "coredns-"+marker, false)
		return err != nil && strings.Contains(err.Error(), "may write only node report ConfigMaps"), err
	})
	for _, tc := range []struct {
		name, node, cm string
		labelled       bool
		denied         string
	}{
		{"report without its label", "", "kdiag-node-report-" + marker + "-a", false, "may write only node report ConfigMaps"},
		{"report, no node in the credentials", "", "kdiag-node-report-" + marker + "-b", true, ""},
		{"another node's report", "n-" + marker, "kdiag-node-report-other-" + marker, true, "only its own node's report"},
		{"its own node's report", "n-" + marker, "kdiag-node-report-n-" + marker, true, ""},
	} {
		err := write(as(tc.node), tc.cm, tc.labelled)
		switch {
		case tc.denied == "" && err != nil:
			t.Errorf("%s: %v, want it allowed", tc.name, err)
		case tc.denied != "" && (err == nil || !strings.Contains(err.Error(), tc.denied)):
			t.Errorf("%s: error %v, want denied: %s", tc.name, err, tc.denied)
		}
	}
}
