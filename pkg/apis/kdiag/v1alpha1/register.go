package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of kdiag's own resources.
const GroupName = "kdiag.io"

// Version is this package's API version.
const Version = "v1alpha1"

// Resource is the plural resource name of Operation.
const Resource = "operations"

// GroupVersion returns kdiag.io/v1alpha1.
func GroupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: GroupName, Version: Version}
}

// OperationGVR returns the group, version and resource of Operation, for
// dynamic clients.
func OperationGVR() schema.GroupVersionResource {
	return GroupVersion().WithResource(Resource)
}

// AddToScheme registers Operation and OperationList with a scheme. It is a
// function rather than the usual package-level SchemeBuilder so that the
// package holds no mutable state.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion(), &Operation{}, &OperationList{})
	metav1.AddToGroupVersion(s, GroupVersion())
	return nil
}
