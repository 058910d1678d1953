package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdiag/kdiag/pkg/lab/pki"
)

// Network settings of the lab control plane.
const (
	// ServiceCIDR is the Service ClusterIP range.
	ServiceCIDR = "10.96.0.0/16"
	// ClusterCIDR is the Pod range kube-controller-manager splits into one
	// /24 podCIDR per Node: a /12 holds 4,096 of them, enough for the
	// 1,000-node benchmark (a /16 would stop at 256 nodes).
	ClusterCIDR = "10.240.0.0/12"
	// ClusterDNSIP is the kube-dns Service's ClusterIP, the tenth address
	// of ServiceCIDR (kubeadm's convention): the nameserver of real pods
	// with dnsPolicy ClusterFirst.
	ClusterDNSIP = "10.96.0.10"
	// ServiceAccountIssuer is the issuer of service-account tokens.
	ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
)

// Identities used by the lab's own clients.
const (
	// AdminUser is the user of DIR/kubeconfig; its group is system:masters.
	AdminUser = "kdiag-lab-admin"
	// ContextName names the cluster, user and context in the kubeconfigs.
	ContextName = "kdiag-lab"

	controllerManagerUser = "system:kube-controller-manager"
	schedulerUser         = "system:kube-scheduler"
	frontProxyClientUser  = "front-proxy-client"
	kubeProxyUser         = "system:kube-proxy"
	// PodsUser is the identity of real pods' kubeconfig.
	PodsUser = "kdiag-lab-pods"
)

// Names of the files in DIR/pki.
const (
	caName                = "ca"
	apiServerName         = "apiserver"
	adminName             = "admin"
	controllerManagerName = "controller-manager"
	schedulerName         = "scheduler"
	frontProxyCAName      = "front-proxy-ca"
	frontProxyClientName  = "front-proxy-client"
	saKeyFile             = "sa.key"
	saPubFile             = "sa.pub"
	kubeProxyName         = "kube-proxy"
	podsName              = "pods"
	// apiServerKubeletClientName is the apiserver's client certificate
	// for kubelet connections (logs).
	apiServerKubeletClientName = "apiserver-kubelet-client"
	// KubeletServingName names the simulated kubelet's serving certificate
	// and key in DIR/pki.
	KubeletServingName = "kubelet-serving"
)

// generatePKI writes DIR/pki: the CA, the apiserver serving certificate, the
// client certificates of the admin, kube-controller-manager and
// kube-scheduler, serving certificates for the latter two (so that their
// health endpoints can be checked against the lab CA), the front-proxy CA
// and client certificate of the aggregation layer, and the service-account
// key pair.
//
// apiServerIPs are further addresses the apiserver serves on (the host end
// of the node network's link, in real mode).
func generatePKI(l Layout, apiServerIPs ...net.IP) (*pki.CA, error) {
	ca, err := pki.NewCA("kdiag-lab-ca")
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	if err := pki.WriteFiles(l.PKI(), caName, ca.CertPEM(), caKey); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	issue := []struct {
		file string
		req  pki.Request
	}{
		{apiServerName, pki.Request{
			CommonName: "kube-apiserver",
			DNSNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			// 10.96.0.1 is the kubernetes Service's ClusterIP, the
			// first address of ServiceCIDR.
			IPs:    append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)}, apiServerIPs...),
			Server: true,
		}},
		{adminName, pki.Request{CommonName: AdminUser, Organizations: []string{"system:masters"}, Client: true}},
		// system:masters because the controllers share this identity
		// (--use-service-account-credentials=false, see components.go).
		{controllerManagerName, pki.Request{CommonName: controllerManagerUser, Organizations: []string{"system:masters"}, Client: true}},
		{schedulerName, pki.Request{CommonName: schedulerUser, Client: true}},
		{controllerManagerName + "-serving", pki.Request{CommonName: "kube-controller-manager", DNSNames: []string{"localhost"}, IPs: loopback, Server: true}},
		// kube-proxy's identity, bound to system:node-proxier by the
		// apiserver's bootstrap RBAC policy.
		{kubeProxyName, pki.Request{CommonName: kubeProxyUser, Client: true}},
		// The identity of real pods that talk to the API (CoreDNS): the
		// lab has no service-account token mounts, so they get a
		// kubeconfig (Layout.PodKubeconfig).
		{podsName, pki.Request{CommonName: PodsUser, Organizations: []string{"system:masters"}, Client: true}},
		// The apiserver's client certificate towards kubelets, and the
		// simulated kubelet's serving certificate for its logs endpoint.
		{apiServerKubeletClientName, pki.Request{CommonName: "kube-apiserver-kubelet-client", Organizations: []string{"system:masters"}, Client: true}},
		{KubeletServingName, pki.Request{CommonName: "kdiag-lab-kubelet", DNSNames: []string{"localhost"}, IPs: loopback, Server: true}},
		{schedulerName + "-serving", pki.Request{CommonName: "kube-scheduler", DNSNames: []string{"localhost"}, IPs: loopback, Server: true}},
	}
	for _, i := range issue {
		p, err := ca.Issue(i.req)
		if err != nil {
			return nil, err
		}
		if err := pki.WriteFiles(l.PKI(), i.file, p.CertPEM, p.KeyPEM); err != nil {
			return nil, err
		}
	}
	// The front proxy has a CA of its own, as in kubeadm: a certificate
	// from the main CA must not be able to assert identities in headers.
	fp, err := pki.NewCA("kdiag-lab-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	fpKey, err := fp.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("encode front-proxy CA key: %w", err)
	}
	if err := pki.WriteFiles(l.PKI(), frontProxyCAName, fp.CertPEM(), fpKey); err != nil {
		return nil, err
	}
	fpc, err := fp.Issue(pki.Request{CommonName: frontProxyClientUser, Client: true})
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFiles(l.PKI(), frontProxyClientName, fpc.CertPEM, fpc.KeyPEM); err != nil {
		return nil, err
	}

	sa, err := pki.NewServiceAccountKey()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.PKIFile(saKeyFile), sa.PrivatePEM, 0o600); err != nil {
		return nil, fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(l.PKIFile(saPubFile), sa.PublicPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write service-account public key: %w", err)
	}
	return ca, nil
}

// writeKubeconfig writes a kubeconfig for server whose user authenticates
// with the certificate DIR/pki/<certName>.{crt,key}. Everything is embedded
// so that the file can be copied elsewhere.
func writeKubeconfig(l Layout, path, server, user, certName string) error {
	caPEM, err := os.ReadFile(l.PKIFile(caName + ".crt"))
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	certPEM, err := os.ReadFile(l.PKIFile(certName + ".crt"))
	if err != nil {
		return fmt.Errorf("read %s certificate: %w", certName, err)
	}
	keyPEM, err := os.ReadFile(l.PKIFile(certName + ".key"))
	if err != nil {
		return fmt.Errorf("read %s key: %w", certName, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ContextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: user}
	cfg.CurrentContext = ContextName
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	// WriteToFile creates the file with 0600 already; be explicit because
	// it embeds a private key.
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("restrict kubeconfig %s: %w", path, err)
	}
	return nil
}

// clientCertConfig mints a client certificate for user in groups, valid
// until notAfter (which may lie in the past), and returns a rest.Config
// that uses it against server.
func clientCertConfig(l Layout, server, user string, groups []string, notAfter time.Time) (*rest.Config, error) {
	ca, err := pki.LoadCA(l.PKIFile(caName+".crt"), l.PKIFile(caName+".key"))
	if err != nil {
		return nil, fmt.Errorf("client certificate for %q: %w", user, err)
	}
	p, err := ca.Issue(pki.Request{CommonName: user, Organizations: groups, Client: true, NotAfter: notAfter})
	if err != nil {
		return nil, fmt.Errorf("client certificate for %q: %w", user, err)
	}
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   ca.CertPEM(),
			CertData: p.CertPEM,
			KeyData:  p.KeyPEM,
		},
	}, nil
}
