package node

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// isBestEffort reports whether the pod is in the BestEffort QoS class: no
// container (init containers included) sets a CPU or memory request or
// limit. status.qosClass is used when the API server filled it in.
func isBestEffort(p *corev1.Pod) bool {
	if p.Status.QOSClass != "" {
		return p.Status.QOSClass == corev1.PodQOSBestEffort
	}
	// The same rule as the API server's QoS computation; hand-written because
	// that helper lives in k8s.io/kubernetes, which kdiag does not import.
	all := append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...)
	for _, c := range all {
		for _, l := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
			for name, q := range l {
				if (name == corev1.ResourceCPU || name == corev1.ResourceMemory) && !q.IsZero() {
					return false
				}
			}
		}
	}
	return true
}

// bestEffortOnPressuredNode reports the BestEffort pods running on a node
// under memory, disk or PID pressure.
func bestEffortOnPressuredNode(s *cluster.Snapshot, n *corev1.Node) (findings.Finding, bool) {
	conds := underPressure(n)
	if len(conds) == 0 {
		return findings.Finding{}, false
	}
	now := s.TakenAt
	ix := s.Index()
	var lines []string
	for _, p := range ix.PodsOnNode(n.Name) {
		if podready.Terminal(p) || p.DeletionTimestamp != nil || evidence.Gapped(s, cluster.ResPods, p.Namespace) || !isBestEffort(p) {
			continue
		}
		w := ix.OwnerOf(p)
		line := fmt.Sprintf("%s/%s", p.Namespace, p.Name)
		if w.Kind != "Pod" {
			line += fmt.Sprintf(" (%s %s)", w.Kind, w.Name)
		}
		lines = append(lines, line+": no CPU or memory requests or limits (QoS BestEffort)")
	}
	if len(lines) == 0 {
		return findings.Finding{}, false
	}
	sort.Strings(lines)
	names := make([]string, len(conds))
	ev := make([]string, 0, len(conds)+len(lines)+1)
	for i, c := range conds {
		names[i] = string(c.Type)
		ev = append(ev, "node "+conditionLine(now, c))
	}
	ev = append(ev, fmt.Sprintf("%s%s on the node in QoS class BestEffort:", evidence.Plural(len(lines), "pod"), podsScope(s)))
	ev = append(ev, evidence.Capped(lines)...)

	return findings.Finding{
		ID: idBestEffort, Severity: findings.Warning, Area: findings.AreaNode,
		Object: findings.ObjectRef{Kind: "Node", Name: n.Name},
		Title: fmt.Sprintf("Node %s is under %s and runs %s with no requests or limits, which the kubelet evicts first",
			n.Name, strings.Join(names, ", "), evidence.Plural(len(lines), "BestEffort pod")),
		Evidence: ev,
		Explanation: "Under node pressure the kubelet evicts BestEffort pods before any other, and the scheduler, seeing " +
			"no requests, keeps packing them onto full nodes. Give each container requests that match its real usage " +
			"(kubectl top) and a memory limit, so the pods are placed where they fit and survive pressure.",
		Remediation: []findings.Remediation{
			findings.Inspect("List the pods on the node with their QoS class", podsQoSCommand(n.Name)),
			findings.Inspect("Measure the pods' real usage to choose requests", "kubectl top pod -A --containers --sort-by=memory"),
			findings.Inspect("Show the node's pressure conditions and allocated resources", "kubectl describe node "+n.Name),
		},
	}, true
}
