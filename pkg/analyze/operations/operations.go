// Package operations holds the analyzers for cluster operations: the
// PodDisruptionBudgets that make drains, upgrades and node-pool scale-downs
// stall, and the events those failed drains leave behind. It is the seed's
// "node pool scale fails because a drain could not evict a pod" story.
package operations

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// Check IDs of this area; each has docs/checks/<ID>.md.
const (
	idPDBBlocks      = "pdb-blocks-disruption"
	idMultiplePDBs   = "pod-multiple-pdbs"
	idNoMatchingPods = "pdb-no-matching-pods"
	idEvictionFailed = "eviction-failed"
	idDrainBlocked   = "drain-blocked"
)

// Checks lists every check this analyzer can report.
func Checks() []findings.Check {
	return []findings.Check{
		{ID: idPDBBlocks, Area: findings.AreaOperations, Severity: findings.Critical,
			Summary: "A PodDisruptionBudget allows zero disruptions, so drains, upgrades and scale-downs of its pods' nodes stall"},
		{ID: idDrainBlocked, Area: findings.AreaOperations, Severity: findings.Critical,
			Summary: "A cordoned node cannot be drained: the eviction API refuses some of its pods"},
		{ID: idMultiplePDBs, Area: findings.AreaOperations, Severity: findings.Warning,
			Summary: "Pods covered by more than one PodDisruptionBudget, which the eviction API refuses to evict"},
		{ID: idNoMatchingPods, Area: findings.AreaOperations, Severity: findings.Warning,
			Summary: "A PodDisruptionBudget whose selector selects no pod, so it protects nothing"},
		{ID: idEvictionFailed, Area: findings.AreaOperations, Severity: findings.Warning,
			Summary: "Warning events from failed evictions and drains (kubectl drain, cluster-autoscaler, AKS upgrades, Karpenter)"},
		{ID: idRepairedRepeatedly, Area: findings.AreaOperations, Severity: findings.Warning,
			Summary: "A node auto-repaired (reboot, reimage, redeploy) twice or more in the events' window: its root cause is still to find"},
	}
}

// Analyze runs every operations check on the snapshot. It is pure and
// deterministic: findings come out sorted.
func Analyze(s *cluster.Snapshot) []findings.Finding {
	a := newAnalysis(s)
	var out []findings.Finding
	out = append(out, a.pdbBlocks()...)
	out = append(out, a.drainBlocked()...)
	out = append(out, a.multiplePDBs()...)
	out = append(out, a.noMatchingPods()...)
	out = append(out, a.evictionFailed()...)
	out = append(out, a.repairedRepeatedly()...)
	findings.Sort(out)
	return out
}

// analysis holds what several checks share: the budgets in a stable order,
// which pods they cover and their computed status.
type analysis struct {
	s   *cluster.Snapshot
	ix  *cluster.Index
	now time.Time
	// pdbs are the snapshot's budgets sorted by namespace and name.
	pdbs    []*policyv1.PodDisruptionBudget
	cov     *pdb.Coverage
	resolve pdb.ControllerFunc
	budgets map[*policyv1.PodDisruptionBudget]pdb.Budget
	// groups caches drainEventGroups; podByName caches findPod's index.
	groups    []*eventGroup
	grouped   bool
	podByName map[string]*corev1.Pod
}

func newAnalysis(s *cluster.Snapshot) *analysis {
	a := &analysis{s: s, ix: s.Index(), now: s.TakenAt, budgets: map[*policyv1.PodDisruptionBudget]pdb.Budget{}}
	for i := range s.PodDisruptionBudgets {
		a.pdbs = append(a.pdbs, &s.PodDisruptionBudgets[i])
	}
	sort.Slice(a.pdbs, func(i, j int) bool {
		if a.pdbs[i].Namespace != a.pdbs[j].Namespace {
			return a.pdbs[i].Namespace < a.pdbs[j].Namespace
		}
		return a.pdbs[i].Name < a.pdbs[j].Name
	})
	a.cov = pdb.NewCoverage(a.pdbs, a.ix.PodsInNamespace)
	a.resolve = pdb.SnapshotControllers(s)
	return a
}

// podsKnown reports whether every pod of the namespace was read, so that
// the coverage of a budget there is complete.
func (a *analysis) podsKnown(ns string) bool { return !evidence.Gapped(a.s, cluster.ResPods, ns) }

// budget returns the computed status of a budget whose namespace's pods
// were read.
func (a *analysis) budget(p *policyv1.PodDisruptionBudget) pdb.Budget {
	if b, ok := a.budgets[p]; ok {
		return b
	}
	b := pdb.Compute(p, a.cov.PodsOf(p), a.resolve, a.now)
	a.budgets[p] = b
	return b
}

// isDaemonOrMirror reports whether drains skip the pod: kubectl drain
// --ignore-daemonsets, cluster-autoscaler and managed upgrades leave
// DaemonSet pods in place, and mirror pods cannot be evicted at all.
func isDaemonOrMirror(p *corev1.Pod) bool {
	if _, ok := p.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller && o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}
