package operations

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

func TestDrainBlocked(t *testing.T) {
	s := base()
	ct.Cordon(&s.Nodes[0], 20*time.Minute) // n1: runs nginx (blocked) and web-0
	ct.Cordon(&s.Nodes[1], 20*time.Minute) // n2: runs web-1 only (its budget allows 1)
	s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeWarning, "FailedDraining",
		"Failed to drain node, 1 pods are waiting to be evicted", 2*time.Minute, 4))
	fs := Analyze(s)
	f := ct.MustFind(t, fs, idDrainBlocked, "n1")
	if f.Severity != findings.Critical || f.Object != (findings.ObjectRef{Kind: "Node", Name: "n1"}) {
		t.Errorf("severity/object = %s %+v", f.Severity, f.Object)
	}
	if !strings.Contains(f.Title, "shop/nginx-5d8f7c-0: PodDisruptionBudget shop/nginx allows 0 disruptions") {
		t.Errorf("title = %q", f.Title)
	}
	ct.AssertEvidence(t, f, "spec.unschedulable=true", "added 20m ago",
		"shop/nginx-5d8f7c-0: HTTP 429 from PodDisruptionBudget shop/nginx (disruptionsAllowed=0)",
		"4 events of failed evictions or drains recorded on the node")
	if strings.Contains(strings.Join(f.Evidence, "\n"), "web-5d8f7c-0") {
		t.Errorf("web-0 (evictable) listed as blocked: %v", f.Evidence)
	}
	if len(ct.Mutating(f)) != 0 {
		t.Errorf("drain-blocked should point to the budget's fixes, not duplicate them: %+v", ct.Mutating(f))
	}
	if ct.Find(fs, idDrainBlocked, "n2") != nil {
		t.Errorf("cordoned n2 reported although all its pods can be evicted")
	}
	if ct.Find(fs, idDrainBlocked, "n3") != nil {
		t.Errorf("uncordoned n3 reported")
	}

	t.Run("DaemonSet pods do not block", func(t *testing.T) {
		s := base()
		s.Pods = s.Pods[1:] // drop nginx
		lbls := map[string]string{"app": "agent"}
		p := ct.RunningPod("shop", "agent-n3", "n3", lbls)
		ct.SetController(&p, "apps/v1", "DaemonSet", "agent")
		s.Pods = append(s.Pods, p)
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "agent", ct.PDBSelector(lbls)), 1), 1, 1, 1, 0))
		ct.Cordon(&s.Nodes[2], time.Minute)
		if f := ct.Find(Analyze(s), idDrainBlocked, "n3"); f != nil {
			t.Errorf("drain-blocked fired for a DaemonSet pod: %s", f.Title)
		}
	})
	t.Run("nodes not read: silent", func(t *testing.T) {
		s := base()
		ct.Cordon(&s.Nodes[0], time.Minute)
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResNodes, Reason: cluster.GapTimeout})
		if got := ct.WithID(Analyze(s), idDrainBlocked); len(got) != 0 {
			t.Errorf("findings despite a nodes gap: %+v", got)
		}
	})
}

func TestPodMultiplePDBs(t *testing.T) {
	s := base()
	// A broad budget over everything labelled tier=fe overlaps web's own.
	for i := range s.Pods {
		if strings.HasPrefix(s.Pods[i].Name, "web-") {
			s.Pods[i].Labels = map[string]string{"app": "web", "tier": "fe"}
		}
	}
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets,
		ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "frontend", ct.PDBSelector(map[string]string{"tier": "fe"})), 1), 3, 2, 3, 1))
	fs := Analyze(s)
	f := ct.MustFind(t, fs, idMultiplePDBs, "web")
	if f.Severity != findings.Warning || f.Object != (findings.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"}) {
		t.Errorf("severity/object = %s %+v", f.Severity, f.Object)
	}
	if !strings.Contains(f.Title, "3 pods of Deployment shop/web are covered by 2 PodDisruptionBudgets (frontend, web)") {
		t.Errorf("title = %q", f.Title)
	}
	ct.AssertEvidence(t, f, "PodDisruptionBudget shop/frontend: selector tier=fe, maxUnavailable=1",
		"PodDisruptionBudget shop/web: selector app=web, minAvailable=2",
		"web-5d8f7c-0 on n1, web-5d8f7c-1 on n2, web-5d8f7c-2 on n3", "HTTP 500")
	if len(ct.WithID(fs, idMultiplePDBs)) != 1 {
		t.Errorf("want one grouped finding, got %d", len(ct.WithID(fs, idMultiplePDBs)))
	}
	if ct.Find(fs, idMultiplePDBs, "nginx") != nil {
		t.Errorf("nginx (one budget) reported")
	}
	// The budgets allow disruptions, yet the pods cannot be evicted: a
	// cordoned node with them is blocked too.
	ct.Cordon(&s.Nodes[2], time.Minute)
	f = ct.MustFind(t, Analyze(s), idDrainBlocked, "n3")
	ct.AssertEvidence(t, f, "HTTP 500, covered by 2 PodDisruptionBudgets (frontend, web)")

	t.Run("empty selector overlaps everything in the namespace", func(t *testing.T) {
		s := base()
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "all", &metav1.LabelSelector{}), 1), 4, 3, 4, 1))
		fs := Analyze(s)
		ct.MustFind(t, fs, idMultiplePDBs, "nginx")
		ct.MustFind(t, fs, idMultiplePDBs, "web")
	})
	t.Run("null selector overlaps nothing", func(t *testing.T) {
		s := base()
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDB("shop", "none", nil))
		if got := ct.WithID(Analyze(s), idMultiplePDBs); len(got) != 0 {
			t.Errorf("null selector counted as covering: %+v", got)
		}
	})
	t.Run("pods not read: silent", func(t *testing.T) {
		s := base()
		s.Pods = nil
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDB("shop", "all", &metav1.LabelSelector{}))
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResPods, Reason: cluster.GapForbidden})
		if got := ct.WithID(Analyze(s), idMultiplePDBs); len(got) != 0 {
			t.Errorf("findings despite a pods gap: %+v", got)
		}
	})
}

func TestPDBNoMatchingPods(t *testing.T) {
	tests := []struct {
		name     string
		pdb      policyv1.PodDisruptionBudget
		fire     bool
		title    string
		evidence []string
	}{
		{name: "typo in the selector", fire: true,
			pdb:      ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "typo", ct.PDBSelector(map[string]string{"app": "ngnix"})), 1), 0, 1, 0, 0),
			title:    "PodDisruptionBudget shop/typo selects no pods (selector app=ngnix)",
			evidence: []string{"pods in namespace shop carry app=nginx (1 pod) close to app=ngnix: a typo?, app=web (3 pods)", "expectedPods=0"}},
		{name: "a key no pod has", fire: true,
			pdb:      ct.MinAvailable(ct.PDB("shop", "k", ct.PDBSelector(map[string]string{"component": "x"})), 1),
			evidence: []string{`no pod in namespace shop has a label "component" (4 pods in the namespace)`}},
		{name: "null selector", fire: true,
			pdb:      ct.MinAvailable(ct.PDB("shop", "null", nil), 1),
			title:    "null selector, which selects no pods in policy/v1",
			evidence: []string{"spec.selector is null"}},
		{name: "invalid selector", fire: true,
			pdb:      ct.MinAvailable(ct.PDB("shop", "bad", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}), 1),
			evidence: []string{"selector error"}},
		{name: "empty selector in an empty namespace", fire: true,
			pdb:   ct.MinAvailable(ct.PDB("empty", "all", &metav1.LabelSelector{}), 1),
			title: "selects every pod of namespace empty ({}), but the namespace has no pods"},
		{name: "empty selector selects the namespace", fire: false,
			pdb: ct.MaxUnavailable(ct.PDB("shop", "all", &metav1.LabelSelector{}), 1)},
		{name: "matchExpressions that match", fire: false,
			pdb: ct.MaxUnavailable(ct.PDB("shop", "expr", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "x"}}}}), 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, tc.pdb)
			s.Events = append(s.Events, ct.Event("PodDisruptionBudget", tc.pdb.Namespace, tc.pdb.Name, corev1.EventTypeNormal, "NoPods", "No matching pods found", time.Minute, 7))
			fs := Analyze(s)
			f := ct.Find(fs, idNoMatchingPods, tc.pdb.Name)
			if !tc.fire {
				if f != nil {
					t.Fatalf("fired: %s", f.Title)
				}
				return
			}
			if f == nil {
				t.Fatalf("did not fire; got %+v", fs)
			}
			if f.Severity != findings.Warning || f.Object.Kind != "PodDisruptionBudget" || f.Object.Namespace != tc.pdb.Namespace {
				t.Errorf("severity/object = %s %+v", f.Severity, f.Object)
			}
			if !strings.Contains(f.Title, tc.title) {
				t.Errorf("title %q lacks %q", f.Title, tc.title)
			}
			ct.AssertEvidence(t, f, append(tc.evidence, "NoPods x7")...)
			if ct.Find(fs, idPDBBlocks, tc.pdb.Name) != nil {
				t.Errorf("a budget with no pods was also reported as blocking")
			}
		})
	}
	t.Run("healthy neighbours are silent", func(t *testing.T) {
		if got := ct.WithID(Analyze(base()), idNoMatchingPods); len(got) != 0 {
			t.Errorf("fired on base: %+v", got)
		}
	})
	t.Run("pods not read in the namespace: silent", func(t *testing.T) {
		s := base()
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("other", "x", ct.PDBSelector(map[string]string{"app": "x"})), 1))
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResPods, Namespace: "other", Reason: cluster.GapForbidden})
		if f := ct.Find(Analyze(s), idNoMatchingPods, "x"); f != nil {
			t.Errorf("fired despite a pods gap: %s", f.Title)
		}
	})
}

func TestEvictionFailed(t *testing.T) {
	tests := []struct {
		name     string
		events   []corev1.Event
		object   findings.ObjectRef
		title    []string
		evidence []string
	}{
		{
			name: "cluster-autoscaler on the node, pod named ns/name",
			events: []corev1.Event{
				ct.NodeEvent("n1", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node, aborting ScaleDown", 9*time.Minute, 2),
				ct.NodeEvent("n1", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain and delete node: Failed to drain node /n1, due to following errors: [failed to evict pod shop/nginx-5d8f7c-0 within allowed timeout (last error: Cannot evict pod as it would violate the pod's disruption budget.)]", 3*time.Minute, 1),
			},
			object:   findings.ObjectRef{Kind: "Node", Name: "n1"},
			title:    []string{"Node n1: 3 events of failed evictions or drains (ScaleDownFailed), last 3m ago", "blocked by PodDisruptionBudget shop/nginx"},
			evidence: []string{"3 occurrences in 2 events", "first 9m ago", "pods involved: shop/nginx-5d8f7c-0 on n1", "PodDisruptionBudget shop/nginx: minAvailable=1, status.disruptionsAllowed=0 now (still blocking"},
		},
		{
			name: "AKS upgrade naming the budget",
			events: []corev1.Event{
				ct.NodeEvent("n1", corev1.EventTypeWarning, "Drain", "Drain node n1 failed when evicting pod nginx-5d8f7c-0 failed with Too Many Requests error. This is often caused by a restrictive Pod Disruption Budget (PDB) policy. See http://aka.ms/aks/debugdrainfailures. Original error: Cannot evict pod as it would violate the pod's disruption budget.. PDB debug info: shop/nginx-5d8f7c-0 blocked by pdb nginx with 0 unready pods.", time.Minute, 1),
			},
			object:   findings.ObjectRef{Kind: "Node", Name: "n1"},
			title:    []string{"(Drain)", "blocked by PodDisruptionBudget shop/nginx"},
			evidence: []string{"pods involved: shop/nginx-5d8f7c-0 on n1"},
		},
		{
			name: "kubectl drain style message on the pod",
			events: []corev1.Event{
				ct.Event("Pod", "shop", "nginx-5d8f7c-0", corev1.EventTypeWarning, "EvictionFailed", `error when evicting pods/"nginx-5d8f7c-0" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.`, 30*time.Second, 12),
			},
			object:   findings.ObjectRef{Kind: "Pod", Namespace: "shop", Name: "nginx-5d8f7c-0"},
			title:    []string{"Pod shop/nginx-5d8f7c-0: 12 events", "blocked by PodDisruptionBudget shop/nginx"},
			evidence: []string{"x12"},
		},
		{
			name: "eviction API cause names the budget, on the node, no pod in the message",
			events: []corev1.Event{
				ct.NodeEvent("n2", corev1.EventTypeWarning, "FailedDraining", "The disruption budget web needs 2 healthy pods and has 2 currently", time.Minute, 1),
			},
			object:   findings.ObjectRef{Kind: "Node", Name: "n2"},
			title:    []string{"blocked by PodDisruptionBudget shop/web"},
			evidence: []string{"PodDisruptionBudget shop/web: minAvailable=2, status.disruptionsAllowed=1 now (no longer blocking"},
		},
		{
			name: "no budget named: say what blocks the node now",
			events: []corev1.Event{
				ct.NodeEvent("n1", corev1.EventTypeWarning, "FailedDraining", "Failed to drain node, 1 pods are waiting to be evicted", time.Minute, 1),
			},
			object:   findings.ObjectRef{Kind: "Node", Name: "n1"},
			title:    []string{"Failed to drain node, 1 pods are waiting to be evicted"},
			evidence: []string{"pods on the node the eviction API would refuse now: shop/nginx-5d8f7c-0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.Events = append(s.Events, tc.events...)
			fs := ct.WithID(Analyze(s), idEvictionFailed)
			if len(fs) != 1 {
				t.Fatalf("want 1 eviction-failed finding, got %d: %+v", len(fs), fs)
			}
			f := &fs[0]
			if f.Severity != findings.Warning || f.Object != tc.object {
				t.Errorf("severity/object = %s %+v, want warning %+v", f.Severity, f.Object, tc.object)
			}
			for _, frag := range tc.title {
				if !strings.Contains(f.Title, frag) {
					t.Errorf("title %q lacks %q", f.Title, frag)
				}
			}
			ct.AssertEvidence(t, f, tc.evidence...)
		})
	}

	t.Run("unrelated warnings are ignored", func(t *testing.T) {
		s := base()
		s.Events = append(s.Events,
			ct.Event("Pod", "shop", "web-5d8f7c-0", corev1.EventTypeWarning, "Failed", `Failed to pull image "nginx": toomanyrequests: You have reached your pull rate limit`, time.Minute, 3),
			ct.Event("Pod", "shop", "web-5d8f7c-1", corev1.EventTypeWarning, "Evicted", "The node was low on resource: memory. Container app was using 1Gi.", time.Minute, 1),
			ct.NodeEvent("n1", corev1.EventTypeWarning, "EvictionThresholdMet", "Attempting to reclaim memory", time.Minute, 1),
			ct.Event("PodDisruptionBudget", "shop", "nginx", corev1.EventTypeWarning, "UnmanagedPods", "Pods selected by this PodDisruptionBudget (selector: ...) were found to be unmanaged.", time.Minute, 1),
			ct.NodeEvent("n2", corev1.EventTypeNormal, "Drain", "Draining node n2: cannot evict pod yet, retrying", time.Minute, 1),
		)
		if got := ct.WithID(Analyze(s), idEvictionFailed); len(got) != 0 {
			t.Errorf("fired on unrelated events: %+v", got)
		}
	})
	t.Run("events not read: silent", func(t *testing.T) {
		s := base()
		s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node", time.Minute, 1))
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResEvents, Reason: cluster.GapTimeout, Message: "partial"})
		if got := ct.WithID(Analyze(s), idEvictionFailed); len(got) != 0 {
			t.Errorf("fired despite an events gap: %+v", got)
		}
	})
}

// TestChecksCoverFindings checks that every finding an analysis emits is a
// declared check with its declared area, and that IDs are unique.
func TestChecksCoverFindings(t *testing.T) {
	ct.AssertChecks(t, Checks(), findings.AreaOperations, idPDBBlocks, idMultiplePDBs, idNoMatchingPods, idEvictionFailed, idDrainBlocked, idRepairedRepeatedly)
	s := base()
	ct.Cordon(&s.Nodes[0], time.Minute)
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets,
		ct.PDB("shop", "null", nil),
		ct.MaxUnavailable(ct.PDB("shop", "all", &metav1.LabelSelector{}), 1))
	s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node", time.Minute, 1))
	s.Events = append(s.Events, ct.NodeEvent("n2", corev1.EventTypeNormal, "NodeRebootStart", "", time.Minute, 2))
	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaOperations)
	for _, c := range Checks() {
		if len(ct.WithID(fs, c.ID)) == 0 {
			t.Errorf("check %s did not fire on the all-problems snapshot", c.ID)
		}
	}
}

func TestAnalyzeIsDeterministic(t *testing.T) {
	build := func() *cluster.Snapshot {
		s := base()
		ct.Cordon(&s.Nodes[0], time.Minute)
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "all", &metav1.LabelSelector{}), 1))
		s.Events = append(s.Events,
			ct.NodeEvent("n1", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node", time.Minute, 1),
			ct.NodeEvent("n2", corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node", time.Minute, 1))
		return s
	}
	a, b := Analyze(build()), Analyze(build())
	if !reflect.DeepEqual(a, b) {
		t.Errorf("two runs differ")
	}
	// Reversed input order gives the same output.
	s := build()
	for i, j := 0, len(s.PodDisruptionBudgets)-1; i < j; i, j = i+1, j-1 {
		s.PodDisruptionBudgets[i], s.PodDisruptionBudgets[j] = s.PodDisruptionBudgets[j], s.PodDisruptionBudgets[i]
	}
	for i, j := 0, len(s.Events)-1; i < j; i, j = i+1, j-1 {
		s.Events[i], s.Events[j] = s.Events[j], s.Events[i]
	}
	if c := Analyze(s); !reflect.DeepEqual(a, c) {
		t.Errorf("output depends on input order")
	}
}
