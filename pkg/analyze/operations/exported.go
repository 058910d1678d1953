package operations

import corev1 "k8s.io/api/core/v1"

// IsDrainFailure reports whether a Warning event records a failed drain or
// eviction (cluster-autoscaler, Karpenter, AKS upgrades, kubectl-like
// drainers): the eviction-failed check's own rule, exported so that
// `kdiag ops` reconstructs refused evictions with the same reading.
func IsDrainFailure(e *corev1.Event) bool { return isDrainFailure(e) }
