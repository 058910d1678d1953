package drain

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// remediate proposes the fixes for one blocker. Mutating fixes reuse the
// builders `kdiag doctor` uses (pkg/pdb) and are verified later by Verify.
func (sim *simulation) remediate(b *Blocker) []findings.Remediation {
	switch b.Reason {
	case ReasonDaemonSet:
		return []findings.Remediation{findings.Inspect("DaemonSet pods are recreated on the node anyway: drain with --ignore-daemonsets (kubectl and kdiag)", "kdiag drain check "+b.Node+" --ignore-daemonsets")}
	case ReasonDaemonSetMissing:
		return []findings.Remediation{findings.Inspect("The pod's DaemonSet is gone: drain with --force to delete the orphaned pod", "kdiag drain check "+b.Node+" --ignore-daemonsets --force")}
	case ReasonLocalStorage:
		return []findings.Remediation{findings.Inspect("The pod keeps data in an emptyDir, lost on eviction: if that is acceptable drain with --delete-emptydir-data", "kdiag drain check "+b.Node+" --delete-emptydir-data")}
	case ReasonUnmanaged:
		return []findings.Remediation{findings.Inspect("The pod has no controller and will not come back after eviction: recreate it under a Deployment, or drain with --force to lose it", "kdiag drain check "+b.Node+" --force")}
	case ReasonMultiplePDBs:
		ns := strings.SplitN(b.Pod, "/", 2)[0]
		return []findings.Remediation{findings.Inspect("The eviction API refuses (HTTP 500) every pod covered by more than one PodDisruptionBudget: delete or narrow all but one of "+b.PDB+" (pod-multiple-pdbs in kdiag doctor)", "kubectl get pdb -n "+ns+" -o wide")}
	case ReasonStaleStatus:
		ns, name, _ := strings.Cut(b.PDB, "/")
		return []findings.Remediation{findings.Inspect("The budget's status is older than its spec: the eviction API refuses until the disruption controller in kube-controller-manager catches up; check that it is running and see its events",
			fmt.Sprintf("kubectl get events -n %s --field-selector involvedObject.kind=PodDisruptionBudget,involvedObject.name=%s", ns, name))}
	}
	p := sim.pdbByRef(b.PDB)
	if p == nil {
		return nil
	}
	budget := pdb.Compute(p, sim.cov.PodsOf(p), pdb.SnapshotControllers(sim.s), sim.s.TakenAt)
	reasons := budget.Reasons()
	k, stranded := sim.disruptionsNeeded(p)
	if b.Rolling {
		// The budget must absorb every eviction that spent it, plus this one.
		k = max(k, int32(len(b.SpentBy))+1)
	}
	var rem []findings.Remediation
	if !b.Rolling && k <= 1 {
		// More replicas help only if the evicted pod can start elsewhere:
		// pinned to the drained nodes, the new ones would be stranded too.
		if r, ok := pdb.ScaleRemediation(p, budget, reasons); ok && len(stranded) == 0 {
			rem = append(rem, r)
		}
		if r, ok := pdb.RelaxRemediation(p, budget); ok {
			rem = append(rem, r)
		}
	} else {
		// Scaling helps only when the evicted pods come back elsewhere; in a
		// rolling stall they did not, and more replicas would be stranded too.
		if !b.Rolling && len(stranded) == 0 && len(budget.Controllers) == 1 {
			c := budget.Controllers[0]
			if n, ok := pdb.ReplicasForOneDisruption(p, budget, c); ok {
				if r, ok := pdb.ScaleTo(p, c, max(n, c.Replicas+1)); ok {
					rem = append(rem, r)
				}
			}
		}
		patch, change, keepsUp := pdb.AllowDisruptions(p, budget, k)
		desc := fmt.Sprintf("Relax the budget (%s) so that the %d pods this drain takes down without a replacement can go one after another", change, k)
		if keepsUp {
			desc += "; at least one selected pod stays up"
		} else {
			desc += "; WARNING: the service has no pod left during the drain, prefer making room for the replacements"
		}
		rem = append(rem, findings.MustPatch(desc+". If Helm or GitOps manages the budget, change it there too", pdb.GVR(), "pdb", p.Namespace, p.Name, types.MergePatchType, patch))
	}
	if len(budget.UnhealthyMembers()) > 0 {
		if r, ok := pdb.AlwaysAllowRemediation(p); ok {
			rem = append(rem, r)
		}
	}
	if len(stranded) > 0 {
		rem = append(rem, findings.Inspect(fmt.Sprintf("The replacements of %s have no schedulable node outside the drained ones (cordoned, NotReady, taints, nodeSelector/affinity or no room): add a node first (a surge node, as managed upgrades do) or let the pods schedule elsewhere", strings.Join(stranded, ", ")),
			"kubectl get nodes -L agentpool"))
	}
	rem = append(rem, findings.Inspect("After the fix, check the drain again", "kdiag drain check "+strings.Join(sim.nodes, " ")))
	return rem
}

// disruptionsNeeded counts the budget's healthy pods on the drained nodes
// whose replacement cannot start elsewhere (at least 1): that many
// disruptions the budget must allow at once for the drain to pass.
func (sim *simulation) disruptionsNeeded(p *policyv1.PodDisruptionBudget) (int32, []string) {
	var stranded []string
	for _, pod := range sim.cov.PodsOf(p) {
		if !sim.draining[pod.Spec.NodeName] || !pdb.IsHealthy(pod) {
			continue
		}
		if !sim.canReschedule(pod) {
			stranded = append(stranded, podRef(pod))
		}
	}
	return max(int32(len(stranded)), 1), stranded
}

func (sim *simulation) canReschedule(pod *corev1.Pod) bool {
	for _, n := range sim.candidates {
		if Schedulable(n, pod) {
			return true
		}
	}
	return false
}

func (sim *simulation) pdbByRef(ref string) *policyv1.PodDisruptionBudget {
	for p := range sim.budgets {
		if p.Namespace+"/"+p.Name == ref {
			return p
		}
	}
	return nil
}

// Verify runs every mutating remediation of the report as a server-side dry
// run (findings.Verifier) and records the results on the blockers.
func Verify(ctx context.Context, v *findings.Verifier, rep *Report) error {
	fs := make([]findings.Finding, len(rep.Blockers))
	for i, b := range rep.Blockers {
		fs[i].Remediation = b.Remediation
	}
	if err := v.Verify(ctx, fs); err != nil {
		return err
	}
	for i := range rep.Blockers {
		rep.Blockers[i].Remediation = fs[i].Remediation
	}
	return nil
}
