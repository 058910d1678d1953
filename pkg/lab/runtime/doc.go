// Package runtime runs a lab pod's containers as real processes: each in
// the pod's network namespace (see package podnet) and in kubelet-style
// cgroups (see package cgroups) with the memory limit of its spec, its
// stdout and stderr written to a log file, restarted after it exits as the
// pod's restartPolicy says, with the kubelet's back-off. It reports what a
// container runtime reports to the kubelet: container IDs, restart counts,
// last termination states (OOMKilled when the memory cgroup recorded an OOM
// kill), and the results of readiness probes.
//
// Which containers run, and how, is decided by a Resolver: the lab's
// built-in programs (kdiag.io/lab/...) and CoreDNS have one; every other
// image is simulated.
package runtime
