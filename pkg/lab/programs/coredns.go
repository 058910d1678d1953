package programs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// coreDNSImages are the repositories of CoreDNS images the lab runs with
// its own build: upstream's, AKS's and Docker Hub's.
func coreDNSImages() []string {
	return []string{"registry.k8s.io/coredns/coredns", "mcr.microsoft.com/oss/kubernetes/coredns", "coredns/coredns", "docker.io/coredns/coredns"}
}

// IsCoreDNSImage reports whether image is a CoreDNS image (any tag).
func IsCoreDNSImage(image string) bool {
	repo := image
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return slices.Contains(coreDNSImages(), repo)
}

// CoreDNSOptions say how the lab runs CoreDNS pods.
type CoreDNSOptions struct {
	// Binary is the CoreDNS executable (binaries.CoreDNS in the lab's set).
	Binary string
	// Dir is where each container's materialized configuration goes, one
	// directory per pod UID and container.
	Dir string
	// APIServer is the API server's URL as reached from inside a pod.
	APIServer string
	// CAData is the PEM of the CA that signed the API server's certificate.
	CAData []byte
	// Client requests the pod's service account token (TokenRequest), as
	// the kubelet does for a projected token.
	Client kubernetes.Interface
	// NodeDNS is the node's nameserver: what /etc/resolv.conf names for a
	// dnsPolicy Default pod such as CoreDNS, hence the upstream of
	// `forward . /etc/resolv.conf`.
	NodeDNS string
}

// tokenSeconds is the lifetime asked for CoreDNS's token. The kubelet
// rotates projected tokens; the lab writes one at container start, so it
// asks for a day (the API server may cap it).
const tokenSeconds = 24 * 60 * 60

// CoreDNSResolver runs CoreDNS images with the lab's CoreDNS build and a
// materialized copy of the container's view of its volumes (the Corefile
// from the coredns ConfigMap, coredns-custom's imports), rewritten only
// where the lab differs from a node (see docs/scenarios.md):
//
//   - absolute paths under a volume's mountPath point into the copy;
//   - /etc/resolv.conf, the node's resolver file, is a file in the copy
//     naming NodeDNS;
//   - every `kubernetes` plugin block gets `kubeconfig`, a kubeconfig with
//     the API server's URL and the pod's service account token: in a
//     cluster the plugin uses the in-cluster configuration (the
//     KUBERNETES_SERVICE_* variables and the token mounted under
//     /var/run/secrets), which processes sharing the host's mount
//     namespace cannot have. An `endpoint` line is dropped, as the
//     kubeconfig names the server.
//
// The copy is made when the container starts: a ConfigMap edit takes
// effect when the pod restarts (the `reload` plugin sees no change).
func CoreDNSResolver(opts CoreDNSOptions) runtime.Resolver {
	return func(ctx context.Context, pod *corev1.Pod, c *corev1.Container, mounts map[string]string) (runtime.Command, bool, error) {
		if !IsCoreDNSImage(c.Image) {
			return runtime.Command{}, false, nil
		}
		if opts.Binary == "" || opts.Dir == "" {
			return runtime.Command{}, false, errors.New("coredns: the lab has no CoreDNS binary or state directory configured")
		}
		root := filepath.Join(opts.Dir, "coredns", string(pod.UID), c.Name)
		if err := os.RemoveAll(root); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: clear %s: %w", root, err)
		}
		if err := materialize(root, mounts); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: %w", err)
		}
		kubeconfig := filepath.Join(root, "kubeconfig")
		if err := writeCoreDNSKubeconfig(ctx, opts, pod, kubeconfig); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: %w", err)
		}
		resolvConf := filepath.Join(root, "etc", "resolv.conf")
		if err := os.MkdirAll(filepath.Dir(resolvConf), 0o755); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: %w", err)
		}
		if err := os.WriteFile(resolvConf, []byte("nameserver "+opts.NodeDNS+"\n"), 0o644); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: write resolv.conf: %w", err)
		}
		args := slices.Clone(c.Args)
		conf := "Corefile" // CoreDNS's default: ./Corefile
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-conf" || args[i] == "--conf" {
				conf = args[i+1]
				args[i+1] = inRoot(root, mounts, conf)
			}
		}
		rw := rewriter{root: root, mounts: mounts, kubeconfig: kubeconfig, resolvConf: resolvConf}
		if err := rw.rewriteTree(); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: %w", err)
		}
		if !filepath.IsAbs(conf) {
			// Relative to the working directory, which is the copy's root.
			if _, err := os.Stat(filepath.Join(root, conf)); err != nil {
				return runtime.Command{}, false, fmt.Errorf("coredns: Corefile %s: %w", conf, err)
			}
		} else if _, err := os.Stat(inRoot(root, mounts, conf)); err != nil {
			return runtime.Command{}, false, fmt.Errorf("coredns: Corefile %s is not in a mounted volume: %w", conf, err)
		}
		return runtime.Command{Path: opts.Binary, Args: args, Dir: root}, true, nil
	}
}

// materialize copies each mount's content to root+mountPath, shortest
// mountPath first, so that nested mounts (/etc/coredns/custom inside
// /etc/coredns) overlay as in the container. Symbolic links (the kubelet's
// ..data links) are followed.
func materialize(root string, mounts map[string]string) error {
	paths := make([]string, 0, len(mounts))
	for p := range mounts {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b string) int { return len(a) - len(b) })
	for _, mp := range paths {
		if err := copyTree(mounts[mp], filepath.Join(root, filepath.Clean("/"+mp))); err != nil {
			return fmt.Errorf("copy volume mounted at %s: %w", mp, err)
		}
	}
	return nil
}

// copyTree copies the file or directory src to dst, following links.
func copyTree(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		// The kubelet's atomic writer keeps versions in ..<timestamp>
		// directories behind the visible links; copy only what is seen.
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// inRoot maps an absolute container path to the copy when it lies under a
// mount, and returns it unchanged otherwise.
func inRoot(root string, mounts map[string]string, p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	clean := filepath.Clean(p)
	for mp := range mounts {
		m := filepath.Clean("/" + mp)
		if clean == m || strings.HasPrefix(clean, m+"/") {
			return filepath.Join(root, clean)
		}
	}
	return p
}

// rewriter rewrites the Corefiles in a copy.
type rewriter struct {
	root, kubeconfig, resolvConf string
	mounts                       map[string]string
}

// The Corefile is edited as text, line by line: CoreDNS's parser (caddy's
// caddyfile package) reads tokens but cannot write a file back, and the
// edits needed are all at the level of a directive line.
var (
	// kubernetesRe is a `kubernetes` directive line, with or without "{".
	kubernetesRe = regexp.MustCompile(`^(\s*)kubernetes(\s[^{#]*)?(\{)?\s*(#.*)?$`)
	// kubeAccessRe are kubernetes plugin options the kubeconfig replaces.
	kubeAccessRe = regexp.MustCompile(`^\s*(kubeconfig|endpoint|tls)(\s|$)`)
	// absPathRe is an absolute path token.
	absPathRe = regexp.MustCompile(`(^|\s)(/[^\s{}#]*)`)
)

// rewriteTree rewrites every regular file under the copy's mounts.
func (rw rewriter) rewriteTree() error {
	for mp := range rw.mounts {
		dir := filepath.Join(rw.root, filepath.Clean("/"+mp))
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out := rw.rewrite(string(data))
			if out == string(data) {
				return nil
			}
			return os.WriteFile(p, []byte(out), 0o644)
		})
		if err != nil {
			return fmt.Errorf("rewrite the configuration in %s: %w", dir, err)
		}
	}
	return nil
}

// rewrite returns a Corefile with the lab's edits.
func (rw rewriter) rewrite(corefile string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(corefile))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	inKubernetes := 0 // brace depth inside a kubernetes block, 0 outside
	for sc.Scan() {
		line := sc.Text()
		if inKubernetes > 0 {
			if inKubernetes == 1 && kubeAccessRe.MatchString(line) {
				out = append(out, commentOut(line, "the lab's kubeconfig (above) replaces it"))
				inKubernetes += strings.Count(line, "{") - strings.Count(line, "}")
				continue
			}
			inKubernetes += strings.Count(line, "{") - strings.Count(line, "}")
			out = append(out, rw.paths(line))
			continue
		}
		if m := kubernetesRe.FindStringSubmatch(line); m != nil {
			indent := m[1]
			kc := indent + "    kubeconfig " + rw.kubeconfig + " lab  # kdiag lab: the pod's service account, instead of the in-cluster configuration"
			if m[3] == "{" {
				out = append(out, line, kc)
				inKubernetes = 1
			} else {
				out = append(out, strings.TrimRight(indent+"kubernetes"+m[2], " ")+" {", kc, indent+"}")
			}
			continue
		}
		out = append(out, rw.paths(line))
	}
	return strings.Join(out, "\n") + "\n"
}

// paths rewrites the absolute paths of one line.
func (rw rewriter) paths(line string) string {
	code, comment, _ := strings.Cut(line, "#")
	code = absPathRe.ReplaceAllStringFunc(code, func(tok string) string {
		lead := tok[:len(tok)-len(strings.TrimLeft(tok, " \t"))]
		p := strings.TrimLeft(tok, " \t")
		if filepath.Clean(p) == "/etc/resolv.conf" {
			return lead + rw.resolvConf
		}
		return lead + inRoot(rw.root, rw.mounts, p)
	})
	if comment != "" || strings.Contains(line, "#") {
		return code + "#" + comment
	}
	return code
}

func commentOut(line, why string) string {
	indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	return indent + "# " + strings.TrimSpace(line) + "  # kdiag lab: " + why
}

// writeCoreDNSKubeconfig writes a kubeconfig for the pod's service
// account, with a token from the TokenRequest API bound to the pod.
func writeCoreDNSKubeconfig(ctx context.Context, opts CoreDNSOptions, pod *corev1.Pod, path string) error {
	if opts.APIServer == "" || opts.Client == nil {
		return errors.New("the lab has no API server address or client for CoreDNS's kubernetes plugin")
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := opts.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: new(int64(tokenSeconds)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("request a token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: opts.APIServer, CertificateAuthorityData: opts.CAData}
	cfg.AuthInfos["lab"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "lab"}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write CoreDNS kubeconfig: %w", err)
	}
	return nil
}
