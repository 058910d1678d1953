// Package node analyzes node health: readiness and heartbeats, resource
// pressure, problem conditions such as those of Node Problem Detector,
// cordons, and the pods that node trouble hurts (OOM kills, kubelet
// evictions, BestEffort pods on pressured nodes).
package node

import (
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Check IDs of the node area; docs/checks/<ID>.md explains each.
const (
	idNotReady           = "node-not-ready"
	idPressure           = "node-pressure"
	idNetworkUnavailable = "node-network-unavailable"
	idProblemCondition   = "node-problem-condition"
	idCordoned           = "node-cordoned"
	idOOMKilled          = "oom-killed"
	idEvicted            = "pod-evicted"
	idBestEffort         = "pod-no-resources-on-pressured-node"
	idDiagnosticReport   = "node-diagnostic-report"
)

// Checks returns every check the node analyzer can report.
func Checks() []findings.Check {
	return []findings.Check{
		{ID: idNotReady, Area: findings.AreaNode, Severity: findings.Critical,
			Summary: "Node whose Ready condition is False or Unknown, with how long, its last Lease heartbeat, the reason and its pods"},
		{ID: idPressure, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "Node under MemoryPressure, DiskPressure or PIDPressure; critical once the kubelet evicts pods for it"},
		{ID: idNetworkUnavailable, Area: findings.AreaNode, Severity: findings.Critical,
			Summary: "Node whose NetworkUnavailable condition is True: its pod network is not set up"},
		{ID: idProblemCondition, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "Non-standard node condition that is True, such as Node Problem Detector's KernelDeadlock or ReadonlyFilesystem"},
		{ID: idCordoned, Area: findings.AreaNode, Severity: findings.Info,
			Summary: "Cordoned node (spec.unschedulable); warning when cordoned for more than 24h"},
		{ID: idOOMKilled, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "Containers OOMKilled, grouped by node, with their memory requests and limits"},
		{ID: idEvicted, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "Pods evicted by the kubelet, grouped by owning workload, with the eviction message"},
		{ID: idBestEffort, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "BestEffort pods (no requests or limits) on a node under memory, disk or PID pressure: they are evicted first"},
		{ID: idDiagnosticReport, Area: findings.AreaNode, Severity: findings.Warning,
			Summary: "The kdiag agent's NotReady diagnostic of a node that is not Ready or degraded in the last 24h, with its verdict"},
	}
}

// Analyze runs every node check on the snapshot. It is a pure function of
// the snapshot: ages are measured against s.TakenAt.
func Analyze(s *cluster.Snapshot) []findings.Finding {
	if s == nil {
		return nil
	}
	var out []findings.Finding
	if !evidence.Gapped(s, cluster.ResNodes, "") {
		for _, n := range sortedNodes(s) {
			if f, ok := notReady(s, n); ok {
				out = append(out, f)
			}
			out = append(out, pressure(s, n)...)
			if f, ok := networkUnavailable(s, n); ok {
				out = append(out, f)
			}
			out = append(out, problemConditions(s, n)...)
			if f, ok := cordoned(s, n); ok {
				out = append(out, f)
			}
			if f, ok := bestEffortOnPressuredNode(s, n); ok {
				out = append(out, f)
			}
			if f, ok := diagnosticReport(s, n); ok {
				out = append(out, f)
			}
		}
	}
	out = append(out, oomKilled(s)...)
	out = append(out, evicted(s)...)
	findings.Sort(out)
	return out
}
