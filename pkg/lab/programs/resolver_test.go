package programs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestResolverRunsLabImagesWithArgsAndPodDNS(t *testing.T) {
	r := Resolver("/usr/local/bin/kdiag", ResolverOptions{ClusterDNS: "10.96.0.10", NodeDNS: "192.0.2.53"})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "store-front-1", Namespace: "shop"}}
	tests := []struct {
		name    string
		pod     func(*corev1.Pod)
		c       corev1.Container
		wantOK  bool
		wantErr string
		want    []string // Path then Args
		wantEnv []string
	}{
		{
			name: "http-client with args, ClusterFirst", c: corev1.Container{Image: "kdiag.io/lab/http-client:v1", Args: []string{"--interval", "2s"}},
			wantOK: true, want: []string{"/usr/local/bin/kdiag", "lab", "program", "http-client", "--interval", "2s"},
			wantEnv: []string{EnvDNSServer + "=10.96.0.10", EnvDNSSearch + "=shop.svc.cluster.local svc.cluster.local cluster.local", EnvDNSNdots + "=5"},
		},
		{
			name: "digest, dnsPolicy Default", pod: func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault },
			c:      corev1.Container{Image: "kdiag.io/lab/dns-client@sha256:abc"},
			wantOK: true, want: []string{"/usr/local/bin/kdiag", "lab", "program", "dns-client"},
			wantEnv: []string{EnvDNSServer + "=192.0.2.53", EnvDNSSearch + "=", EnvDNSNdots + "=1"},
		},
		{
			name: "dnsConfig adds searches and ndots", pod: func(p *corev1.Pod) {
				p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: new("2")}}}
			},
			c:      corev1.Container{Image: "kdiag.io/lab/memory-hog"},
			wantOK: true, want: []string{"/usr/local/bin/kdiag", "lab", "program", "memory-hog"},
			wantEnv: []string{EnvDNSServer + "=10.96.0.10", EnvDNSSearch + "=shop.svc.cluster.local svc.cluster.local cluster.local corp.example", EnvDNSNdots + "=2"},
		},
		{name: "other image", c: corev1.Container{Image: "nginx:1.27"}},
		{name: "unknown lab program", c: corev1.Container{Image: "kdiag.io/lab/nope:v1"}, wantErr: "no such lab program (known: kdiag.io/lab/dns-client"},
		{name: "command override", c: corev1.Container{Image: "kdiag.io/lab/http-server", Command: []string{"/bin/sh"}}, wantErr: "use args"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pod.DeepCopy()
			if tc.pod != nil {
				tc.pod(p)
			}
			cmd, ok, err := r(context.Background(), p, &tc.c, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.wantOK {
				t.Fatalf("ok, err = %v, %v; want %v", ok, err, tc.wantOK)
			}
			if !ok {
				return
			}
			if got := append([]string{cmd.Path}, cmd.Args...); !slices.Equal(got, tc.want) {
				t.Errorf("command = %q, want %q", got, tc.want)
			}
			if !slices.Equal(cmd.Env, tc.wantEnv) {
				t.Errorf("env = %q, want %q", cmd.Env, tc.wantEnv)
			}
		})
	}
}

func TestResolverWithoutPathReexecutesItself(t *testing.T) {
	cmd, ok, err := Resolver("", ResolverOptions{})(context.Background(), &corev1.Pod{}, &corev1.Container{Image: "kdiag.io/lab/http-server:v1"}, nil)
	exe, _ := os.Executable()
	if err != nil || !ok || cmd.Path != exe || !slices.Equal(cmd.Args[:3], []string{"lab", "program", "http-server"}) {
		t.Fatalf("got %+v, %v, %v; want this executable with lab program http-server", cmd, ok, err)
	}
	if slices.ContainsFunc(cmd.Env, func(s string) bool { return strings.HasPrefix(s, EnvDNSServer+"=") }) {
		t.Errorf("env %q names a nameserver though the lab has no cluster DNS", cmd.Env)
	}
}

func TestIsCoreDNSImage(t *testing.T) {
	for image, want := range map[string]bool{
		"registry.k8s.io/coredns/coredns:v1.12.1":            true,
		"mcr.microsoft.com/oss/kubernetes/coredns:v1.12.1-2": true,
		"registry.k8s.io/coredns/coredns@sha256:abcd":        true,
		"coredns/coredns":                                         true,
		"registry.k8s.io/coredns/coredns-fork:v1":                 false,
		"kdiag.io/lab/upstream-dns:v1":                            false,
		"localhost:5000/coredns/coredns:v1":                       false,
		"mcr.microsoft.com/oss/kubernetes/coredns-autoscaler:1.8": false,
	} {
		if got := IsCoreDNSImage(image); got != want {
			t.Errorf("IsCoreDNSImage(%q) = %v, want %v", image, got, want)
		}
	}
}

// aksCorefile is the Corefile of the store-demo scenario (AKS's).
const aksCorefile = `.:53 {
    errors
    ready
    health {
        lameduck 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        endpoint https://10.0.0.1:443
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    hosts /etc/coredns/custom/hosts.txt # a file in a volume
    cache 30
    import custom/*.override
}
import custom/*.server
`

func TestCorefileRewrite(t *testing.T) {
	rw := rewriter{root: "/lab/coredns/uid/coredns", kubeconfig: "/lab/coredns/uid/coredns/kubeconfig", resolvConf: "/lab/coredns/uid/coredns/etc/resolv.conf",
		mounts: map[string]string{"/etc/coredns": "/vol/a", "/etc/coredns/custom": "/vol/b"}}
	got := rw.rewrite(aksCorefile)
	for _, want := range []string{
		"    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        kubeconfig /lab/coredns/uid/coredns/kubeconfig lab  # kdiag lab:",
		"        # endpoint https://10.0.0.1:443  # kdiag lab: the lab's kubeconfig (above) replaces it\n",
		"        pods insecure\n",
		"    forward . /lab/coredns/uid/coredns/etc/resolv.conf {\n",
		"    hosts /lab/coredns/uid/coredns/etc/coredns/custom/hosts.txt # a file in a volume\n",
		"    import custom/*.override\n",
		"import custom/*.server\n",
		"    prometheus :9153\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten Corefile lacks %q:\n%s", want, got)
		}
	}
	// A kubernetes directive without a block gets one.
	got = rw.rewrite("cluster.local:53 {\n  kubernetes cluster.local\n}\n")
	if want := "  kubernetes cluster.local {\n      kubeconfig /lab/coredns/uid/coredns/kubeconfig lab"; !strings.Contains(got, want) {
		t.Errorf("blockless kubernetes: got\n%s\nwant %q", got, want)
	}
	if !strings.HasSuffix(got, "  }\n}\n") {
		t.Errorf("blockless kubernetes: block not closed:\n%s", got)
	}
	// Everything else is left alone.
	plain := "example.org:53 {\n    forward . 192.0.2.53\n    log\n}\n"
	if got := rw.rewrite(plain); got != plain {
		t.Errorf("rewrite changed a Corefile needing no change:\n%s", got)
	}
}

func TestMaterializeOverlaysNestedMounts(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	// The kubelet's atomic writer: visible links into a ..data directory.
	if err := os.MkdirAll(filepath.Join(a, "..2026_11_28"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "..2026_11_28", "Corefile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_28", filepath.Join(a, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/Corefile", filepath.Join(a, "Corefile")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "payments.server"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := materialize(root, map[string]string{"/etc/coredns/custom": b, "/etc/coredns": a}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"etc/coredns/Corefile": "x", "etc/coredns/custom/payments.server": "y"} {
		got, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/coredns/..data")); err == nil {
		t.Error("the atomic writer's ..data directory was copied")
	}
	if err := materialize(root, map[string]string{"/etc/x": filepath.Join(a, "missing")}); err == nil || !strings.Contains(err.Error(), "volume mounted at /etc/x") {
		t.Errorf("missing volume: err = %v", err)
	}
}

func TestClusterDNSIP(t *testing.T) {
	for cidr, want := range map[string]string{"10.96.0.0/16": "10.96.0.10", "10.0.0.5/24": "10.0.0.10", "bad": "", "10.0.0.0/29": ""} {
		got, err := ClusterDNSIP(cidr)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ClusterDNSIP(%s) = %q, %v; want %q", cidr, got, err, want)
		}
	}
}
