package lab

import (
	"fmt"
	"strconv"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
)

// Ports are the loopback TCP ports of one lab. They are picked free at
// start-up, so that several labs (and parallel test packages) coexist.
type Ports struct {
	EtcdClient        int `json:"etcdClient"`
	EtcdPeer          int `json:"etcdPeer"`
	APIServer         int `json:"apiServer"`
	ControllerManager int `json:"controllerManager"`
	Scheduler         int `json:"scheduler"`
}

// APIServerURL returns the URL of the kube-apiserver.
func (p Ports) APIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", p.APIServer) }

func (p Ports) etcdClientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.EtcdClient) }
func (p Ports) etcdPeerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPeer) }

// component is one control-plane process: its binary and arguments.
type component struct {
	name string // process name, log file name and binary name
	args []string
}

// etcdComponent is a single-member etcd on loopback, without TLS: only
// local processes can reach it, and the apiserver is its only client.
func etcdComponent(l Layout, p Ports) component {
	return component{name: binaries.Etcd, args: []string{
		"--name=lab",
		"--data-dir=" + l.EtcdData(),
		"--listen-client-urls=" + p.etcdClientURL(),
		"--advertise-client-urls=" + p.etcdClientURL(),
		"--listen-peer-urls=" + p.etcdPeerURL(),
		"--initial-advertise-peer-urls=" + p.etcdPeerURL(),
		"--initial-cluster=lab=" + p.etcdPeerURL(),
		"--initial-cluster-state=new",
		// The lab's data is disposable; fsync would make every write wait
		// for the disk and slow the control plane down a lot.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}}
}

// apiServerComponent is kube-apiserver serving on host only (127.0.0.1;
// in real mode pods reach it through the kubelet's forwarder, see
// DataPlane.APIServerHost).
func apiServerComponent(l Layout, p Ports) component {
	return component{name: binaries.APIServer, args: []string{
		"--etcd-servers=" + p.etcdClientURL(),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.APIServer),
		"--advertise-address=127.0.0.1",
		// kubectl logs: the apiserver dials the simulated kubelet at the
		// node's InternalIP (nodes also report their name as Hostname,
		// which does not resolve), presenting this client certificate.
		// The kubelet's serving certificate is not verified, as with a
		// kubeadm cluster without --kubelet-certificate-authority.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate=" + l.PKIFile(apiServerKubeletClientName+".crt"),
		"--kubelet-client-key=" + l.PKIFile(apiServerKubeletClientName+".key"),
		// Endpoints may not hold loopback addresses, so the reconciler that
		// publishes the apiserver's address in the default/kubernetes
		// Endpoints would fail forever. The Service itself still exists.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + l.PKIFile(apiServerName+".crt"),
		"--tls-private-key-file=" + l.PKIFile(apiServerName+".key"),
		"--client-ca-file=" + l.PKIFile(caName+".crt"),
		// The aggregation layer's front proxy, set up as kubeadm does. Without
		// it the controller manager and scheduler log an error every few
		// seconds about a missing request-header CA, and extension API
		// servers (such as a metrics server) could not be registered.
		"--requestheader-client-ca-file=" + l.PKIFile(frontProxyCAName+".crt"),
		"--requestheader-allowed-names=" + frontProxyClientUser,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + l.PKIFile(frontProxyClientName+".crt"),
		"--proxy-client-key-file=" + l.PKIFile(frontProxyClientName+".key"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + l.PKIFile(saPubFile),
		"--service-account-signing-key-file=" + l.PKIFile(saKeyFile),
		"--authorization-mode=Node,RBAC",
		// The ServiceAccount admission plugin rejects a Pod until its
		// namespace's "default" ServiceAccount exists, which the controller
		// manager creates asynchronously: creating a namespace and then a
		// Pod at once would race it. It would also inject token volumes
		// that the simulated kubelet never mounts. Nothing in the lab needs
		// either, so the plugin is off.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
	}}
}

// controllerManagerComponent runs every default controller.
func controllerManagerComponent(l Layout, p Ports) component {
	kc := l.Config(controllerManagerName)
	return component{name: binaries.ControllerManager, args: []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.ControllerManager),
		"--tls-cert-file=" + l.PKIFile(controllerManagerName+"-serving.crt"),
		"--tls-private-key-file=" + l.PKIFile(controllerManagerName+"-serving.key"),
		"--controllers=*",
		"--leader-elect=false",
		// kubeadm clusters give each controller its own service account.
		// Setting those up (one ServiceAccount and TokenRequest per
		// controller) doubles the lab's start-up time, ~5 s to ~9 s, so
		// the controllers share the controller manager's own identity,
		// whose certificate adds the group system:masters (see certs.go).
		"--use-service-account-credentials=false",
		"--root-ca-file=" + l.PKIFile(caName+".crt"),
		"--service-account-private-key-file=" + l.PKIFile(saKeyFile),
		"--cluster-signing-cert-file=" + l.PKIFile(caName+".crt"),
		"--cluster-signing-key-file=" + l.PKIFile(caName+".key"),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + ClusterCIDR,
		"--service-cluster-ip-range=" + ServiceCIDR,
		// The default (50s) makes a dead node take most of a minute to turn
		// NotReady. The lab shortens it so that scenarios and users see the
		// condition quickly. The simulated kubelet renews its Lease every
		// 10s, well inside this period.
		"--node-monitor-grace-period=20s",
		// The defaults (20 QPS) would take half an hour to create the
		// benchmark's 30,000 pods; the lab's apiserver is local and idle.
		"--kube-api-qps=300",
		"--kube-api-burst=600",
		"--profiling=false",
	}}
}

// schedulerComponent is kube-scheduler with its default profile.
func schedulerComponent(l Layout, p Ports) component {
	kc := l.Config(schedulerName)
	return component{name: binaries.Scheduler, args: []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.Scheduler),
		"--tls-cert-file=" + l.PKIFile(schedulerName+"-serving.crt"),
		"--tls-private-key-file=" + l.PKIFile(schedulerName+"-serving.key"),
		"--leader-elect=false",
		// Same reason as the controller manager's: bind 30,000 pods quickly.
		"--kube-api-qps=300",
		"--kube-api-burst=600",
		"--profiling=false",
	}}
}

// kubeProxyComponent is the real kube-proxy in iptables mode, run in the
// node network (see DataPlane) for all nodes at once. It leaves the
// conntrack sysctls alone, which are global to the machine.
func kubeProxyComponent(l Layout, d *DataPlane, nodeName string) component {
	return component{name: binaries.Proxy, args: []string{
		"--kubeconfig=" + l.Config(kubeProxyName),
		"--proxy-mode=iptables",
		"--cluster-cidr=" + ClusterCIDR,
		"--hostname-override=" + nodeName,
		"--bind-address=" + d.Network.LabAddr.Addr().String(),
		// NodePorts on the node network's own address only (kube-proxy
		// logs an error about "all local IPs" otherwise).
		"--nodeport-addresses=primary",
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--profiling=false",
	}}
}
