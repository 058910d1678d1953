package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OperationType says what kind of operation a record is about.
// +kubebuilder:validation:MinLength=1
type OperationType string

// The operation types kdiag records. Other tools may record their own
// types; the field is free text.
const (
	// TypeDrain is a cordon and drain of nodes (`kdiag drain run`).
	TypeDrain OperationType = "Drain"
	// TypeRepair is a node auto-repair sequence (`kdiag repair`):
	// reboot, reimage, redeploy.
	TypeRepair OperationType = "Repair"
	// TypeFix is an applied fix (a scale or patch proposed by doctor or
	// drain check).
	TypeFix OperationType = "Fix"
	// TypeEviction is a refused eviction found in the events without a
	// cordon around it (reconstructed records only).
	TypeEviction OperationType = "Eviction"
)

// OperationPhase is where an operation stands.
// +kubebuilder:validation:Enum=Running;Succeeded;Failed
type OperationPhase string

// The phases of an operation and of its steps.
const (
	PhaseRunning   OperationPhase = "Running"
	PhaseSucceeded OperationPhase = "Succeeded"
	PhaseFailed    OperationPhase = "Failed"
)

// Labels and annotations kdiag sets on Operations.
const (
	// LabelType carries spec.type, to list operations of one type.
	LabelType = "kdiag.io/type"
	// LabelNode carries the target node's name when the operation has
	// exactly one node and its name fits in a label value.
	LabelNode = "kdiag.io/node"
	// AnnotationSource is "events" on operations that kdiag reconstructed
	// from cluster events rather than read from a record.
	AnnotationSource = "kdiag.io/source"
)

// Operation records one operation on the cluster: a drain, a node repair,
// an applied fix. Its status holds the phase, each step, the error and a
// troubleshooting hint.
//
// Operation is cluster-scoped: its targets are mostly nodes, which are
// cluster-scoped themselves, and a node pool operation spans namespaces (a
// drain evicts pods of every namespace), so no namespace is a natural home
// for it; it also keeps `kdiag ops list` one list call.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=kop,categories=kdiag
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Step",type=string,JSONPath=`.status.currentStep`
// +kubebuilder:printcolumn:name="Started",type=date,JSONPath=`.status.startTime`,priority=1
// +kubebuilder:printcolumn:name="Ended",type=date,JSONPath=`.status.endTime`,priority=1
// +kubebuilder:printcolumn:name="By",type=string,JSONPath=`.spec.initiator`,priority=1
// +kubebuilder:printcolumn:name="Hint",type=string,JSONPath=`.status.hint`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Operation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says what the operation is and what it acts on.
	Spec OperationSpec `json:"spec"`
	// Status is how the operation went.
	// +optional
	Status OperationStatus `json:"status,omitempty"`
}

// OperationSpec says what an operation is and what it acts on. It does not
// change once the operation started.
type OperationSpec struct {
	// Type is the kind of operation: Drain, Repair, Fix, ...
	Type OperationType `json:"type"`
	// Target is what the operation acts on.
	Target OperationTarget `json:"target"`
	// Initiator is who or what ran the operation, e.g.
	// "kdiag drain run (user alice)" or "kdiag repair controller".
	// +optional
	Initiator string `json:"initiator,omitempty"`
	// Reason says why the operation was started, e.g. "node NotReady for
	// 5m12s" or "drain check fix: scale deployment/nginx to 2".
	// +optional
	Reason string `json:"reason,omitempty"`
}

// OperationTarget is what an operation acts on: nodes, or one object.
type OperationTarget struct {
	// Name is the target for display: a node name, a node selector such as
	// "agentpool=np1", or an object as "kind/namespace/name".
	Name string `json:"name"`
	// Nodes are the nodes the operation acts on, if any.
	// +optional
	// +listType=set
	Nodes []string `json:"nodes,omitempty"`
	// Selector is the label selector that chose the nodes, if one did.
	// +optional
	Selector string `json:"selector,omitempty"`
	// Object is the object the operation acts on, when it is not nodes
	// (the Deployment an applied fix scaled, for example).
	// +optional
	Object *ObjectReference `json:"object,omitempty"`
}

// ObjectReference names one object.
type ObjectReference struct {
	// APIVersion of the object, e.g. "apps/v1".
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the object, e.g. "Deployment".
	Kind string `json:"kind"`
	// Namespace of the object; empty for cluster-scoped objects.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name of the object.
	Name string `json:"name"`
}

// OperationStatus is how an operation went.
type OperationStatus struct {
	// Phase is Running until the operation ends, then Succeeded or Failed.
	// +optional
	Phase OperationPhase `json:"phase,omitempty"`
	// StartTime is when the operation started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// EndTime is when the operation ended; unset while it runs.
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`
	// CurrentStep is the name of the newest step, for `kubectl get`.
	// +optional
	CurrentStep string `json:"currentStep,omitempty"`
	// Steps are the operation's steps in the order they started.
	// +optional
	// +listType=atomic
	Steps []OperationStep `json:"steps,omitempty"`
	// Error is why the operation failed, on one line.
	// +optional
	Error string `json:"error,omitempty"`
	// Hint says what to look at or do next, e.g. "PodDisruptionBudget
	// shop/nginx allows 0 disruptions: scale deployment/nginx to 2 or relax
	// the budget (kdiag drain check lab-node-1 proposes both, dry-run
	// checked)".
	// +optional
	Hint string `json:"hint,omitempty"`
}

// OperationStep is one step of an operation: a cordon, the eviction of one
// pod, a reboot.
type OperationStep struct {
	// Name says what the step does, e.g. "cordon lab-node-1" or
	// "evict pod shop/nginx-5d4f-abcde".
	Name string `json:"name"`
	// Phase is Running until the step ends, then Succeeded or Failed.
	Phase OperationPhase `json:"phase"`
	// StartTime is when the step started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// EndTime is when the step ended.
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`
	// Message says how the step went, e.g. the eviction API's refusal.
	// +optional
	Message string `json:"message,omitempty"`
}

// OperationList is a list of Operations.
//
// +kubebuilder:object:root=true
type OperationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the operations.
	Items []Operation `json:"items"`
}
