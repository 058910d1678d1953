// Package realpods holds the integration tests of the lab's real pods, as
// root on this machine: a lab in real mode (package lab), the simulated
// kubelet running containers (package kubelet with package runtime) on the
// data plane (packages podnet and cgroups), and the real kube-proxy. The
// tests check what the issue asks of the data plane: OOM kills and
// restarts, Service translation and a wrong targetPort refused, readiness
// and EndpointSlices, kubectl logs, cleanup after `lab down` and after
// kill -9, and two labs side by side. It has no code of its own.
package realpods
