// Package nodehealth holds the types that the agent's problem detectors
// (log monitors, PSI) share with its exporters (API server, metrics).
package nodehealth

import "time"

// Condition is the state of one node condition that a detector owns.
type Condition struct {
	// Type is the NodeCondition type, e.g. ReadonlyFilesystem.
	Type string
	// Status is true when the problem is present.
	Status bool
	// Reason is a CamelCase reason, e.g. FilesystemIsReadOnly.
	Reason string
	// Message is a human-readable detail.
	Message string
	// Transition is when Status last changed.
	Transition time.Time
}

// OOMKill describes one kernel OOM kill, assembled from the kernel's
// "oom-kill:" and "Killed process" lines.
type OOMKill struct {
	// PID and Task name the killed process.
	PID  int
	Task string
	// PodUID and ContainerID come from the victim's memory cgroup path;
	// both are empty when the process was not in a pod.
	PodUID      string
	ContainerID string
	// MemCG is the victim's memory cgroup path (task_memcg).
	MemCG string
	// Constraint is the kernel's OOM constraint, e.g. CONSTRAINT_MEMCG.
	Constraint string
	// AnonRSSKB, FileRSSKB and ShmemRSSKB are the victim's resident memory at the kill.
	AnonRSSKB, FileRSSKB, ShmemRSSKB int64
}

// UsageBytes is the victim's resident memory at the kill.
func (o *OOMKill) UsageBytes() int64 { return (o.AnonRSSKB + o.FileRSSKB + o.ShmemRSSKB) * 1024 }

// Event is a temporary problem: something that happened once.
type Event struct {
	// Source names the monitor, e.g. kernel-monitor.
	Source string
	// Reason is a CamelCase reason, e.g. OOMKilling.
	Reason string
	// Message is the matched log text or a detail.
	Message string
	// Time is when the problem happened.
	Time time.Time
	// OOM is set for an OOM kill whose details were parsed.
	OOM *OOMKill
	// Normal marks good news, such as a condition that cleared; other
	// events are warnings.
	Normal bool
}

// Sink receives what detectors find. Implementations must be safe for
// concurrent use.
type Sink interface {
	// SetCondition records the current state of a condition.
	SetCondition(source string, c Condition)
	// Emit records a temporary problem.
	Emit(e Event)
}

// Tee returns a Sink that hands everything to each of sinks in turn.
func Tee(sinks ...Sink) Sink { return tee(sinks) }

type tee []Sink

func (t tee) SetCondition(source string, c Condition) {
	for _, s := range t {
		s.SetCondition(source, c)
	}
}

func (t tee) Emit(e Event) {
	for _, s := range t {
		s.Emit(e)
	}
}
