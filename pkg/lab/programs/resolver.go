package programs

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// ImagePrefix is the repository of the built-in programs' images: a
// container with image kdiag.io/lab/<name>[:tag] runs program <name>.
const ImagePrefix = "kdiag.io/lab/"

// DefaultClusterDomain is the kubelet's default --cluster-domain.
const DefaultClusterDomain = "cluster.local"

// ResolverOptions give the built-in programs the pod's DNS configuration.
type ResolverOptions struct {
	// ClusterDNS is the kube-dns Service IP, the kubelet's --cluster-dns:
	// the nameserver of pods with dnsPolicy ClusterFirst. Empty leaves
	// such pods without a nameserver.
	ClusterDNS string
	// ClusterDomain is the kubelet's --cluster-domain; empty means
	// DefaultClusterDomain.
	ClusterDomain string
	// NodeDNS is the node's own nameserver (what its /etc/resolv.conf
	// says): the nameserver of pods with dnsPolicy Default.
	NodeDNS string
}

// ProgramName returns the built-in program an image names, and whether it
// is one: kdiag.io/lab/http-server:v1 is "http-server".
func ProgramName(image string) (string, bool) {
	rest, ok := strings.CutPrefix(image, ImagePrefix)
	if !ok {
		return "", false
	}
	if i := strings.IndexAny(rest, ":@"); i >= 0 {
		rest = rest[:i]
	}
	_, known := Get(rest)
	return rest, known
}

// Resolver runs containers whose image is a built-in program as
// `kdiagPath lab program NAME ARGS...` (empty kdiagPath: this executable,
// see runtime.ProgramCommand), with the container's args and, on top of
// the spec's environment, the pod's DNS configuration in EnvDNSServer,
// EnvDNSSearch and EnvDNSNdots. Other images are not its business (ok is
// false); kdiag.io/lab/<unknown> is an error, as a missing image would be.
func Resolver(kdiagPath string, opts ResolverOptions) runtime.Resolver {
	return func(_ context.Context, pod *corev1.Pod, c *corev1.Container, _ map[string]string) (runtime.Command, bool, error) {
		if !strings.HasPrefix(c.Image, ImagePrefix) {
			return runtime.Command{}, false, nil
		}
		name, ok := ProgramName(c.Image)
		if !ok {
			known := make([]string, 0, len(All()))
			for _, p := range All() {
				known = append(known, ImagePrefix+p.Name)
			}
			return runtime.Command{}, false, fmt.Errorf("image %s: no such lab program (known: %s)", c.Image, strings.Join(known, ", "))
		}
		if len(c.Command) > 0 {
			return runtime.Command{}, false, fmt.Errorf("image %s: command %q replaces the program's entrypoint, which lab programs do not support; use args", c.Image, c.Command)
		}
		var cmd runtime.Command
		if kdiagPath == "" {
			var err error
			if cmd, err = runtime.ProgramCommand(name, c.Args...); err != nil {
				return runtime.Command{}, false, err
			}
		} else {
			cmd = runtime.Command{Path: kdiagPath, Args: append([]string{"lab", "program", name}, c.Args...)}
		}
		cmd.Env = DNSEnv(pod, opts)
		return cmd, true, nil
	}
}

// DNSEnv returns the EnvDNS* variables of a pod: what the kubelet would
// write into its resolv.conf for its dnsPolicy and dnsConfig.
func DNSEnv(pod *corev1.Pod, opts ResolverOptions) []string {
	domain := opts.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	var servers, search []string
	ndots := 1
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		// The kubelet's rule: ClusterFirst on the host network means Default.
		policy = corev1.DNSDefault
	}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if opts.ClusterDNS != "" {
			servers = append(servers, opts.ClusterDNS)
		}
		search = []string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}
		ndots = 5
	case corev1.DNSDefault:
		if opts.NodeDNS != "" {
			servers = append(servers, opts.NodeDNS)
		}
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		search = append(search, dc.Searches...)
		for _, o := range dc.Options {
			if o.Name == "ndots" && o.Value != nil {
				if n, err := strconv.Atoi(*o.Value); err == nil && n >= 0 {
					ndots = n
				}
			}
		}
	}
	var env []string
	if len(servers) > 0 {
		// Stub resolvers try the first nameserver first; the programs
		// use only that one.
		env = append(env, EnvDNSServer+"="+servers[0])
	}
	return append(env, EnvDNSSearch+"="+strings.Join(search, " "), EnvDNSNdots+"="+strconv.Itoa(ndots))
}

// ClusterDNSIP returns the kube-dns Service IP of a service range: its
// tenth address, as kubeadm (and the store-demo scenario) choose it, e.g.
// 10.96.0.10 for 10.96.0.0/16. It is the kubelet's --cluster-dns.
func ClusterDNSIP(serviceCIDR string) (string, error) {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return "", fmt.Errorf("service range %q: %w", serviceCIDR, err)
	}
	a := p.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	if !p.Contains(a) {
		return "", fmt.Errorf("service range %s is too small for a cluster DNS address", serviceCIDR)
	}
	return a.String(), nil
}
