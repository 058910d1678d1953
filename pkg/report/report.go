// Package report assembles doctor's result and renders it as text for
// people, JSON or YAML for machines, and Markdown for tickets.
package report

import (
	"time"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// APIVersion and Kind identify the JSON/YAML document; its schema is in
// docs/report-schema.json.
const (
	APIVersion = "kdiag.io/v1alpha1"
	Kind       = "DoctorReport"
)

// Report is the complete result of one doctor run.
type Report struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Source     string    `json:"source"`
	Live       bool      `json:"live"`
	Namespace  string    `json:"namespace,omitempty"`
	TakenAt    time.Time `json:"takenAt"`
	// Read counts the objects read per resource.
	Read     map[cluster.Resource]int `json:"read"`
	Summary  Summary                  `json:"summary"`
	Findings []findings.Finding       `json:"findings"`
	// Gaps lists what could not be read; findings that would depend on it
	// are missing from the report, so it is never silent.
	Gaps []cluster.Gap `json:"gaps"`
}

// Summary counts findings by severity and area.
type Summary struct {
	Critical int                   `json:"critical"`
	Warning  int                   `json:"warning"`
	Info     int                   `json:"info"`
	ByArea   map[findings.Area]int `json:"byArea"`
}

// New builds a report from a snapshot and its (sorted) findings.
func New(s *cluster.Snapshot, fs []findings.Finding) *Report {
	r := &Report{
		APIVersion: APIVersion, Kind: Kind,
		Source: s.Source, Live: s.Live, Namespace: s.Namespace, TakenAt: s.TakenAt,
		Read: map[cluster.Resource]int{
			cluster.ResNodes: len(s.Nodes), cluster.ResPods: len(s.Pods), cluster.ResServices: len(s.Services),
			cluster.ResEndpointSlices: len(s.EndpointSlices), cluster.ResDeployments: len(s.Deployments),
			cluster.ResReplicaSets: len(s.ReplicaSets), cluster.ResStatefulSets: len(s.StatefulSets),
			cluster.ResDaemonSets: len(s.DaemonSets), cluster.ResPDBs: len(s.PodDisruptionBudgets),
			cluster.ResEvents: len(s.Events), cluster.ResConfigMaps: len(s.ConfigMaps), cluster.ResLeases: len(s.Leases),
		},
		Findings: fs,
		Gaps:     s.Gaps,
		Summary:  Summary{ByArea: map[findings.Area]int{}},
	}
	if r.Findings == nil {
		r.Findings = []findings.Finding{}
	}
	if r.Gaps == nil {
		r.Gaps = []cluster.Gap{}
	}
	for _, f := range fs {
		switch f.Severity {
		case findings.Critical:
			r.Summary.Critical++
		case findings.Warning:
			r.Summary.Warning++
		case findings.Info:
			r.Summary.Info++
		}
		r.Summary.ByArea[f.Area]++
	}
	return r
}

// AtLeast reports whether any finding has severity s or worse.
func (r *Report) AtLeast(s findings.Severity) bool {
	for _, f := range r.Findings {
		if f.Severity.Rank() >= s.Rank() {
			return true
		}
	}
	return false
}
