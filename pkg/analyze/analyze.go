// Package analyze runs every analyzer over a snapshot. Analyzers are pure
// functions from a cluster.Snapshot to findings; each area lives in its own
// subpackage and this package only lists them.
package analyze

import (
	"github.com/kdiag/kdiag/pkg/analyze/dns"
	"github.com/kdiag/kdiag/pkg/analyze/network"
	"github.com/kdiag/kdiag/pkg/analyze/node"
	"github.com/kdiag/kdiag/pkg/analyze/operations"
	"github.com/kdiag/kdiag/pkg/analyze/workload"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Analyzer is one area's analysis: the checks it may report and the pure
// function that runs them.
type Analyzer struct {
	Area    findings.Area
	Checks  []findings.Check
	Analyze func(*cluster.Snapshot) []findings.Finding
}

// All returns every analyzer, in report order.
func All() []Analyzer {
	return []Analyzer{
		{Area: findings.AreaNetwork, Checks: network.Checks(), Analyze: network.Analyze},
		{Area: findings.AreaDNS, Checks: dns.Checks(), Analyze: dns.Analyze},
		{Area: findings.AreaNode, Checks: node.Checks(), Analyze: node.Analyze},
		{Area: findings.AreaOperations, Checks: operations.Checks(), Analyze: operations.Analyze},
		{Area: findings.AreaWorkload, Checks: workload.Checks(), Analyze: workload.Analyze},
	}
}

// Checks returns every check of every analyzer.
func Checks() []findings.Check {
	var out []findings.Check
	for _, a := range All() {
		out = append(out, a.Checks...)
	}
	return out
}

// Filter selects which checks run: when Only is non-empty, only those IDs;
// IDs in Skip never run.
type Filter struct {
	Only []string
	Skip []string
}

func (f Filter) keep(id string) bool {
	for _, s := range f.Skip {
		if s == id {
			return false
		}
	}
	if len(f.Only) == 0 {
		return true
	}
	for _, s := range f.Only {
		if s == id {
			return true
		}
	}
	return false
}

// Run runs every analyzer on the snapshot and returns the findings the
// filter keeps, sorted for reports.
func Run(s *cluster.Snapshot, f Filter) []findings.Finding {
	var out []findings.Finding
	for _, a := range All() {
		for _, fd := range a.Analyze(s) {
			if f.keep(fd.ID) {
				out = append(out, fd)
			}
		}
	}
	findings.Sort(out)
	return out
}
