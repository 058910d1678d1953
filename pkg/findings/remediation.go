package findings

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// Remediation is one command a user can run. A mutating command also carries
// the Action that reproduces it through the API, so that kdiag can verify it
// with a server-side dry run, and the result of that dry run.
type Remediation struct {
	Description string `json:"description"`
	Command     string `json:"command"`
	// Action is the API form of a mutating command; nil for read-only
	// commands such as kubectl describe.
	Action *Action `json:"action,omitempty"`
	// DryRun is the result of verifying Action with dryRun=All; nil for
	// read-only commands.
	DryRun *DryRun `json:"dryRun,omitempty"`
}

// Mutating reports whether running the command changes the cluster.
func (r Remediation) Mutating() bool { return r.Action != nil }

// Action is a PATCH request that a mutating remediation stands for.
type Action struct {
	Group       string          `json:"group,omitempty"`
	Version     string          `json:"version"`
	Resource    string          `json:"resource"`
	Subresource string          `json:"subresource,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	Name        string          `json:"name"`
	PatchType   types.PatchType `json:"patchType"`
	Patch       json.RawMessage `json:"patch"`
}

// GVR returns the action's resource.
func (a Action) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: a.Group, Version: a.Version, Resource: a.Resource}
}

// DryRunStatus is the outcome of verifying a mutating remediation.
type DryRunStatus string

// Dry-run outcomes.
const (
	DryRunPassed  DryRunStatus = "passed"
	DryRunFailed  DryRunStatus = "failed"
	DryRunSkipped DryRunStatus = "skipped"
)

// DryRun records what the API server said about a mutating remediation sent
// with dryRun=All.
type DryRun struct {
	Status DryRunStatus `json:"status"`
	// Reason explains a failure (the server's message) or why it was skipped.
	Reason string `json:"reason,omitempty"`
}

// Inspect builds a read-only remediation: a command to look closer.
func Inspect(description, command string) Remediation {
	return Remediation{Description: description, Command: command}
}

// Scale builds a mutating remediation that sets the replicas of a workload
// through its scale subresource, the same request `kubectl scale` sends.
// kind is the kubectl resource name, e.g. "deployment" or "statefulset".
func Scale(description, kind, namespace, name string, replicas int32) Remediation {
	gvr := workloadGVR(kind)
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	return Remediation{
		Description: description,
		Command: fmt.Sprintf("kubectl scale %s/%s -n %s --replicas=%d",
			strings.ToLower(kind), name, namespace, replicas),
		Action: &Action{
			Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
			Subresource: "scale", Namespace: namespace, Name: name,
			PatchType: types.MergePatchType, Patch: patch,
		},
	}
}

// Patch builds a mutating remediation that is a `kubectl patch` of one
// object. kind is the kubectl resource name (e.g. "service", "pdb");
// patchType is merge, strategic or json; patch is the body, marshalled to JSON.
func Patch(description string, gvr schema.GroupVersionResource, kind, namespace, name string, patchType types.PatchType, patch any) (Remediation, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return Remediation{}, fmt.Errorf("encode patch for %s/%s: %w", kind, name, err)
	}
	var typeFlag string
	switch patchType {
	case types.MergePatchType:
		typeFlag = "merge"
	case types.StrategicMergePatchType:
		typeFlag = "strategic"
	case types.JSONPatchType:
		typeFlag = "json"
	default:
		return Remediation{}, fmt.Errorf("patch type %q is not one kubectl patch accepts", patchType)
	}
	cmd := fmt.Sprintf("kubectl patch %s %s", kind, name)
	if namespace != "" {
		cmd += " -n " + namespace
	}
	cmd += " --type=" + typeFlag + " -p " + shellQuote(string(body))
	return Remediation{
		Description: description,
		Command:     cmd,
		Action: &Action{
			Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
			Namespace: namespace, Name: name, PatchType: patchType, Patch: body,
		},
	}, nil
}

// MustPatch is Patch for bodies built from Go values that always marshal
// (maps, slices, structs of strings and numbers). It panics otherwise, which
// would be a programming error in the check that calls it.
func MustPatch(description string, gvr schema.GroupVersionResource, kind, namespace, name string, patchType types.PatchType, patch any) Remediation {
	r, err := Patch(description, gvr, kind, namespace, name, patchType, patch)
	if err != nil {
		panic(err)
	}
	return r
}

func workloadGVR(kind string) schema.GroupVersionResource {
	switch strings.ToLower(kind) {
	case "replicaset", "replicasets", "rs":
		return schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	case "statefulset", "statefulsets", "sts":
		return schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	case "replicationcontroller", "replicationcontrollers", "rc":
		return schema.GroupVersionResource{Version: "v1", Resource: "replicationcontrollers"}
	default:
		return schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	}
}

// shellQuote wraps s in single quotes for a POSIX shell. Hand-written because
// it is three lines and the standard library has no shell quoting.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
