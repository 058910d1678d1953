// Package podnet builds the network that real lab pods run on, and that the
// gadget tests' test bed reuses:
//
//   - one "node network" namespace per lab (Network), holding a bridge
//     (br0) with the gateway address of every node's podCIDR, and where
//     kube-proxy writes its rules;
//   - one namespace per pod (Pod), with a veth whose other end sits on the
//     bridge, the pod's IP and a default route via its node's gateway;
//   - a veth pair between the host and the node network, with a small
//     per-lab link-local address pair. The node network masquerades what
//     it sends to the host, so the host needs no route to the pod and
//     Service ranges, and two labs with the same ranges stay apart. The
//     node network has no default route: traffic to any other address
//     fails with "network unreachable" and never leaves the machine.
//
// Everything lives in namespaces named after the lab's ID (see Names):
// deleting them (Delete) removes links, addresses, routes and iptables
// rules at once, even after every lab process was killed.
//
// It drives iproute2 and iptables, as a CNI bridge plugin run by hand
// would: the lab needs a dozen link operations per pod, for which a
// netlink library would be a new dependency, and kube-proxy needs the
// iptables binaries anyway.
package podnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NetnsDir is where iproute2 keeps named network namespaces.
const NetnsDir = "/run/netns"

// BridgeName is the bridge of a node network.
const BridgeName = "br0"

// labLink is the node network's end of the veth to the host.
const labLink = "eth0"

// Network is the node network of one lab. Its fields are what state.json
// records, so that Delete works from another process.
type Network struct {
	// ID is the lab's ID, a few hex digits.
	ID string `json:"id"`
	// Netns is the name of the node network namespace under NetnsDir.
	Netns string `json:"netns"`
	// HostLink is the host's end of the veth to the node network.
	HostLink string `json:"hostLink"`
	// HostAddr and LabAddr are the two ends' addresses (a /30).
	HostAddr netip.Prefix `json:"hostAddr"`
	LabAddr  netip.Prefix `json:"labAddr"`
}

// Names returns the Network of lab id, without creating anything and
// without an address (Create picks it).
func Names(id string) Network {
	return Network{ID: id, Netns: "kdiag-lab-" + id, HostLink: "kdl-" + id}
}

// NetnsPath returns the node network namespace's file.
func (n Network) NetnsPath() string { return filepath.Join(NetnsDir, n.Netns) }

// podNetnsPrefix prefixes the names of the lab's pod namespaces.
func (n Network) podNetnsPrefix() string { return n.Netns + "-p" }

// Check reports, in one line, why this machine cannot build a node network:
// not root, no iproute2 or iptables, no network namespaces.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("real pods need root (network namespaces, veth, cgroups)")
	}
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("real pods need %s on PATH (apt-get install iproute2 iptables): %w", bin, err)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("real pods need network namespaces: %w", err)
	}
	return nil
}

// Create builds the node network of lab id: namespace, bridge, the veth to
// the host with a free link-local address pair, forwarding, bridge
// netfilter and masquerading towards the host. On failure it removes what
// it built.
func Create(ctx context.Context, id string) (_ Network, err error) {
	n := Names(id)
	host, lab, err := freeLinkPair(id)
	if err != nil {
		return n, err
	}
	n.HostAddr, n.LabAddr = host, lab
	defer func() {
		if err != nil {
			_ = n.Delete(context.WithoutCancel(ctx))
		}
	}()
	if err := CreateBridge(ctx, n.Netns, BridgeName); err != nil {
		return n, err
	}
	steps := [][]string{
		{"link", "add", n.HostLink, "type", "veth", "peer", "name", labLink, "netns", n.Netns},
		{"addr", "add", n.HostAddr.String(), "dev", n.HostLink},
		{"link", "set", n.HostLink, "up"},
		{"-n", n.Netns, "addr", "add", n.LabAddr.String(), "dev", labLink},
		{"-n", n.Netns, "link", "set", labLink, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return n, err
		}
	}
	// The bridge sysctls exist once br_netfilter is loaded; load it when
	// it is not (best effort: the sysctl below says what is missing).
	if _, err := os.Stat("/proc/sys/net/bridge"); errors.Is(err, os.ErrNotExist) {
		if mp, err := exec.LookPath("modprobe"); err == nil {
			_ = exec.CommandContext(ctx, mp, "br_netfilter").Run()
		}
	}
	// Forwarding between pods; bridged traffic through iptables, so that
	// a reply from a pod to a pod on the same bridge is un-DNATed by
	// conntrack (kube-proxy needs it, as on a real node); and every packet
	// to the host masqueraded.
	if err := n.exec(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"); err != nil {
		return n, fmt.Errorf("%w (is the br_netfilter module loaded? modprobe br_netfilter)", err)
	}
	if err := n.exec(ctx, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", labLink, "-j", "MASQUERADE"); err != nil {
		return n, err
	}
	return n, nil
}

// freeLinkPair picks a /30 in 169.254.64.0/18 derived from id, skipping
// subnets that an address of the host already uses (another lab's).
func freeLinkPair(id string) (netip.Prefix, netip.Prefix, error) {
	used, err := hostPrefixes()
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	sum := sha256.Sum256([]byte(id))
	start := binary.BigEndian.Uint32(sum[:4]) % 4096
	for i := range uint32(4096) {
		k := (start + i) % 4096 // 4,096 /30 subnets in a /18
		base := netip.AddrFrom4([4]byte{169, 254, byte(64 + k/64), byte((k % 64) * 4)})
		sub := netip.PrefixFrom(base, 30)
		if overlaps(sub, used) {
			continue
		}
		host := netip.PrefixFrom(base.Next(), 30)
		lab := netip.PrefixFrom(base.Next().Next(), 30)
		return host, lab, nil
	}
	return netip.Prefix{}, netip.Prefix{}, errors.New("no free /30 left in 169.254.64.0/18 for the lab's host link")
}

func overlaps(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

// hostPrefixes lists the IPv4 networks of the host's addresses.
func hostPrefixes() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(ipn.String())
		if err == nil && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// AddGateway puts gw (a node's podCIDR with its first address, such as
// 10.240.1.1/24) on the bridge. It is idempotent.
func (n Network) AddGateway(ctx context.Context, gw netip.Prefix) error {
	err := ip(ctx, "-n", n.Netns, "addr", "add", gw.String(), "dev", BridgeName)
	if err != nil && (strings.Contains(err.Error(), "File exists") || strings.Contains(err.Error(), "already assigned")) {
		return nil
	}
	return err
}

// AddLocalAddr puts addr (a /32) on the node network's loopback, for a
// service of the node itself that pods reach through their gateway, such
// as the node's DNS resolver. It is idempotent.
func (n Network) AddLocalAddr(ctx context.Context, addr netip.Addr) error {
	err := ip(ctx, "-n", n.Netns, "addr", "add", netip.PrefixFrom(addr, addr.BitLen()).String(), "dev", "lo")
	if err != nil && (strings.Contains(err.Error(), "File exists") || strings.Contains(err.Error(), "already assigned")) {
		return nil
	}
	return err
}

// Pod is the network of one pod.
type Pod struct {
	// Netns is the pod's namespace name under NetnsDir.
	Netns string
	// HostVeth is the veth end on the bridge, in the node network.
	HostVeth string
	// Addr is the pod's address with its node's podCIDR length; Gateway
	// the node's gateway.
	Addr    netip.Prefix
	Gateway netip.Addr
}

// NetnsPath returns the pod's namespace file.
func (p Pod) NetnsPath() string { return filepath.Join(NetnsDir, p.Netns) }

// PodNetns returns the namespace name of the pod with key (such as its
// UID) in the lab, without creating it.
func (n Network) PodNetns(key string) string {
	return n.podNetnsPrefix() + shortHash(key)
}

// AddPod creates the namespace of pod key (a stable key such as its UID)
// with addr, a veth on the bridge and a default route via gw; gw's prefix
// must already be on the bridge (AddGateway). An existing namespace of the
// same key is replaced.
func (n Network) AddPod(ctx context.Context, key string, addr netip.Prefix, gw netip.Addr) (Pod, error) {
	h := shortHash(key)
	p := Pod{Netns: n.podNetnsPrefix() + h, HostVeth: "v" + h, Addr: addr, Gateway: gw}
	_ = n.DeletePod(ctx, p.Netns)
	err := Attach(ctx, Attachment{
		BridgeNetns: n.Netns, Bridge: BridgeName, Netns: p.Netns, HostVeth: p.HostVeth,
		Addrs: []netip.Prefix{addr}, Gateway: gw, Hairpin: true,
	})
	return p, err
}

// CreateBridge creates the namespace netns with loopback up and an up
// bridge named bridge in it.
func CreateBridge(ctx context.Context, netns, bridge string) error {
	for _, s := range [][]string{
		{"netns", "add", netns},
		{"-n", netns, "link", "set", "lo", "up"},
		{"-n", netns, "link", "add", bridge, "type", "bridge"},
		{"-n", netns, "link", "set", bridge, "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// Attachment is a pod namespace on a bridge (see Attach).
type Attachment struct {
	// BridgeNetns and Bridge are where the bridge is.
	BridgeNetns, Bridge string
	// Netns is the pod namespace to create; HostVeth the name of the veth
	// end on the bridge (at most 15 bytes). The pod's end is eth0.
	Netns, HostVeth string
	// Addrs go on eth0 (IPv6 ones without duplicate address detection, so
	// that they are usable at once).
	Addrs []netip.Prefix
	// Gateway, when valid, is the pod's default route.
	Gateway netip.Addr
	// Hairpin lets traffic leave and re-enter the same bridge port (a pod
	// reaching itself through its Service).
	Hairpin bool
}

// Attach creates a pod namespace with loopback and eth0 up, eth0 being
// one end of a veth whose other end is on the bridge. On failure it
// removes the namespace again.
func Attach(ctx context.Context, a Attachment) (err error) {
	defer func() {
		if err != nil {
			_ = DeleteNetns(context.WithoutCancel(ctx), a.Netns)
		}
	}()
	steps := [][]string{
		{"netns", "add", a.Netns},
		{"-n", a.Netns, "link", "set", "lo", "up"},
		{"-n", a.BridgeNetns, "link", "add", a.HostVeth, "type", "veth", "peer", "name", "eth0", "netns", a.Netns},
		{"-n", a.BridgeNetns, "link", "set", a.HostVeth, "master", a.Bridge},
	}
	if a.Hairpin {
		steps = append(steps, []string{"-n", a.BridgeNetns, "link", "set", a.HostVeth, "type", "bridge_slave", "hairpin", "on"})
	}
	steps = append(steps, []string{"-n", a.BridgeNetns, "link", "set", a.HostVeth, "up"})
	for _, addr := range a.Addrs {
		s := []string{"-n", a.Netns, "addr", "add", addr.String(), "dev", "eth0"}
		if addr.Addr().Is6() {
			s = append(s, "nodad")
		}
		steps = append(steps, s)
	}
	steps = append(steps, []string{"-n", a.Netns, "link", "set", "eth0", "up"})
	if a.Gateway.IsValid() {
		steps = append(steps, []string{"-n", a.Netns, "route", "add", "default", "via", a.Gateway.String()})
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// DeleteNetns removes a named network namespace; a missing one is fine.
func DeleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(NetnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip(ctx, "netns", "del", name)
}

// DeletePod removes a pod namespace (and with it its veth). A missing one
// is fine.
func (n Network) DeletePod(ctx context.Context, netns string) error {
	return DeleteNetns(ctx, netns)
}

// Delete removes the node network and every pod namespace of the lab, and
// the host link if it is still there. It is idempotent and touches nothing
// but names derived from the lab's ID.
func (n Network) Delete(ctx context.Context) error {
	if n.Netns == "" {
		return nil
	}
	var errs []error
	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list network namespaces: %w", err))
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), n.podNetnsPrefix()) {
			if err := n.DeletePod(ctx, e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := n.DeletePod(ctx, n.Netns); err != nil {
		errs = append(errs, err)
	}
	if n.HostLink != "" {
		if _, err := net.InterfaceByName(n.HostLink); err == nil {
			if err := ip(ctx, "link", "del", n.HostLink); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the lab still exists: namespaces and the host
// link. Tests use it to check a cleanup.
func (n Network) Leftovers() []string {
	var out []string
	entries, _ := os.ReadDir(NetnsDir)
	for _, e := range entries {
		if e.Name() == n.Netns || strings.HasPrefix(e.Name(), n.podNetnsPrefix()) {
			out = append(out, "netns "+e.Name())
		}
	}
	if _, err := net.InterfaceByName(n.HostLink); err == nil {
		out = append(out, "link "+n.HostLink)
	}
	return out
}

// exec runs a command inside the node network.
func (n Network) exec(ctx context.Context, args ...string) error {
	return ip(ctx, append([]string{"netns", "exec", n.Netns}, args...)...)
}

// Exec runs a command inside the node network and returns its combined
// output, for example iptables-save in a test.
func (n Network) Exec(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Netns}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), n.Netns, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// DialContext connects from inside the node network, as the kubelet's
// probes connect from the node: pod IPs are routed only there.
func (n Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, n.NetnsPath(), network, addr)
}

// DialIn connects to addr from inside the network namespace file netns.
// The socket is created on a thread moved into the namespace; a socket
// keeps its namespace, so the connection is then used from any thread.
// The moved thread is never returned to the Go scheduler.
func DialIn(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go lockAndEnter(netns, func() {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}, func(err error) { ch <- result{err: err} })
	r := <-ch
	return r.c, r.err
}

// lockAndEnter runs do on a thread moved into the network namespace file
// netns, or fail when it cannot move there. Call it as a goroutine of its
// own: the moved thread is never returned to the Go scheduler (no
// UnlockOSThread), so the runtime ends it with the goroutine.
func lockAndEnter(netns string, do func(), fail func(error)) {
	runtime.LockOSThread()
	f, err := os.Open(netns)
	if err != nil {
		runtime.UnlockOSThread()
		fail(fmt.Errorf("open network namespace: %w", err))
		return
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		fail(fmt.Errorf("enter network namespace %s: %w", netns, err))
		return
	}
	do()
}

// ListenIn listens on addr inside the network namespace file netns.
func ListenIn(netns, network, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go lockAndEnter(netns, func() {
		l, err := net.Listen(network, addr)
		ch <- result{l, err}
	}, func(err error) { ch <- result{err: err} })
	r := <-ch
	return r.l, r.err
}

func ip(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// shortHash is 10 hex digits of key's SHA-256: short enough for interface
// names (at most 15 bytes), long enough not to collide in one lab.
func shortHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:5])
}
