// Package v1alpha1 holds the kdiag.io/v1alpha1 API: the Operation, a
// record of one drain, node repair or applied fix, kept in the cluster so
// that "what happened to this node, and why did it fail" can be answered
// later (`kdiag ops`), as AKS's "last operation status" does.
//
// The types are plain Go structs with kubebuilder markers;
// zz_generated.deepcopy.go and deploy/crds/kdiag.io_operations.yaml are
// generated from them by controller-gen: run `go generate ./pkg/apis/...`
// after changing a type (the ops package's tests check that the manifest
// and the types agree on a real API server).
//
// +kubebuilder:object:generate=true
// +groupName=kdiag.io
package v1alpha1

//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=./... crd:crdVersions=v1 output:crd:artifacts:config=../../../../deploy/crds
