// Package findings defines what kdiag reports: a Finding with a stable check
// ID, a severity, the object it concerns, evidence and remediation commands,
// and the Report that collects them. Renderers and the server-side dry-run
// verifier live beside the model.
package findings

import (
	"fmt"
	"sort"
	"strings"
)

// Severity ranks how urgently a finding needs attention.
type Severity string

// The three severities, from the most to the least urgent.
const (
	Critical Severity = "critical"
	Warning  Severity = "warning"
	Info     Severity = "info"
)

// Rank orders severities: Critical is 3, Warning 2, Info 1, anything else 0.
func (s Severity) Rank() int {
	switch s {
	case Critical:
		return 3
	case Warning:
		return 2
	case Info:
		return 1
	}
	return 0
}

// ParseSeverity accepts "critical", "warning" or "info" (any case).
func ParseSeverity(s string) (Severity, error) {
	v := Severity(strings.ToLower(strings.TrimSpace(s)))
	if v.Rank() == 0 {
		return "", fmt.Errorf("unknown severity %q: want critical, warning or info", s)
	}
	return v, nil
}

// Area is the layer a finding belongs to; the report groups findings by area.
type Area string

// The areas, in the order reports list them.
const (
	AreaNetwork    Area = "network"
	AreaDNS        Area = "dns"
	AreaNode       Area = "node"
	AreaOperations Area = "operations"
	AreaWorkload   Area = "workload"
)

// Areas returns every area in report order.
func Areas() []Area {
	return []Area{AreaNetwork, AreaDNS, AreaNode, AreaOperations, AreaWorkload}
}

func (a Area) order() int {
	for i, x := range Areas() {
		if x == a {
			return i
		}
	}
	return len(Areas())
}

// ObjectRef names the Kubernetes object a finding concerns.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String renders the reference the way kubectl names objects: kind/name,
// prefixed by the namespace when there is one.
func (o ObjectRef) String() string {
	k := strings.ToLower(o.Kind)
	if o.Namespace == "" {
		return k + "/" + o.Name
	}
	return o.Namespace + "/" + k + "/" + o.Name
}

// Finding is one problem found by one check, with the proof and the fix.
type Finding struct {
	// ID is the stable check ID; docs/checks/<ID>.md explains it.
	ID       string    `json:"id"`
	Severity Severity  `json:"severity"`
	Area     Area      `json:"area"`
	Object   ObjectRef `json:"object"`
	// Title is one line that says what is wrong.
	Title string `json:"title"`
	// Evidence lists the fields, events and numbers that prove the finding.
	Evidence []string `json:"evidence"`
	// Explanation says why it matters and what causes it.
	Explanation string `json:"explanation"`
	// Remediation lists commands the user can run, read-only ones to look
	// closer and mutating ones that fix the problem.
	Remediation []Remediation `json:"remediation"`
}

// Check describes a check for documentation and for the registry test that
// every check has its page under docs/checks/.
type Check struct {
	ID       string   `json:"id"`
	Area     Area     `json:"area"`
	Severity Severity `json:"severity"`
	// Summary is one line saying what the check detects.
	Summary string `json:"summary"`
}

// Sort orders findings for reports: by area, then severity (most urgent
// first), then check ID and object.
func Sort(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Area != b.Area {
			return a.Area.order() < b.Area.order()
		}
		if a.Severity != b.Severity {
			return a.Severity.Rank() > b.Severity.Rank()
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Object.String() < b.Object.String()
	})
}
