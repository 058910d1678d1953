// Package testbed builds, for the gadgets' tests, a small node on this
// machine: network namespaces (one per "pod") with veth pairs on a bridge
// that lives in its own namespace, addresses in 10.251.0.0/24 and
// fd00:251::/64 routed only between them, and kubelet-style cgroups
// (kubepods/burstable/pod<uid>/<cid>) in the cgroup2 and v1 memory
// hierarchies. Processes are this test binary re-executed in a role (see
// roles.go). Everything is removed in t.Cleanup.
package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/lab/cgroups"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
)

// Environment variables of a re-executed helper process.
const (
	envRole    = "KDIAG_TESTBED_ROLE"
	envCgroups = "KDIAG_TESTBED_CGROUPS"
	envNetns   = "KDIAG_TESTBED_NETNS"
)

// RequireKernel skips the test unless it runs as root on a kernel with BTF.
func RequireKernel(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("gadget tests load eBPF and create network namespaces: run them as root")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("gadget tests need kernel BTF (/sys/kernel/btf/vmlinux)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("gadget tests need iproute2 (ip)")
	}
}

// Bed is one test's node.
type Bed struct {
	t       testing.TB
	id      string
	bridge  string
	pods    []*Pod
	cgRoots cgroups.Roots
	cgBase  cgroups.Parent // the bed's parent cgroup in every hierarchy

	mu    sync.Mutex
	procs []*Proc
}

// Pod is a pod of the test bed: a network namespace and a container cgroup.
type Pod struct {
	Name, Namespace string
	UID             string
	ContainerName   string
	ContainerID     string
	Labels          map[string]string
	// NetnsName is the name under /run/netns; Netns its inode.
	NetnsName string
	Netns     uint32
	IPv4      netip.Addr
	IPv6      netip.Addr
	// Cgroups are the container cgroup directories the pod's processes join.
	Cgroups []string
	// CgroupV2 is the container's cgroup2 directory ("" without cgroup2);
	// MemoryCgroup the v1 memory one ("" without it).
	CgroupV2, MemoryCgroup string
}

// New creates the bridge namespace of a new bed.
func New(t testing.TB) *Bed {
	t.Helper()
	RequireKernel(t)
	b := &Bed{t: t, id: randHex(3)}
	b.bridge = "kd-" + b.id + "-br"
	b.cgRoots, _ = cgroups.Detect() // no hierarchy: pods get no cgroups
	b.cgBase = cgroups.Parent("kdiag-test-" + b.id)
	t.Cleanup(b.cleanup)
	if err := podnet.CreateBridge(context.Background(), b.bridge, "br0"); err != nil {
		t.Fatalf("create the bed's bridge: %v", err)
	}
	return b
}

// PodOptions tunes AddPod.
type PodOptions struct {
	// MemoryLimit, when set, is written to the v1 memory cgroup's
	// memory.limit_in_bytes and the cgroup2 memory.max (if delegated).
	MemoryLimit int64
	Labels      map[string]string
	// V1Only keeps the pod out of the cgroup2 tree, as runc does on some
	// hybrid hosts: its processes are in v1 hierarchies only, and its
	// sockets carry the cgroup2 root.
	V1Only bool
}

// AddPod creates a pod: namespace, veth on the bridge, addresses, cgroups.
func (b *Bed) AddPod(namespace, name string, opts PodOptions) *Pod {
	b.t.Helper()
	n := len(b.pods) + 2
	p := &Pod{
		Name: name, Namespace: namespace,
		UID:           uuid(),
		ContainerName: "main",
		ContainerID:   randHex(32),
		Labels:        opts.Labels,
		NetnsName:     fmt.Sprintf("kd-%s-p%d", b.id, n),
		IPv4:          netip.AddrFrom4([4]byte{10, 251, 0, byte(n)}),
		IPv6:          netip.MustParseAddr(fmt.Sprintf("fd00:251::%x", n)),
	}
	b.pods = append(b.pods, p)
	if err := podnet.Attach(context.Background(), podnet.Attachment{
		BridgeNetns: b.bridge, Bridge: "br0", Netns: p.NetnsName, HostVeth: fmt.Sprintf("v%d", n),
		Addrs: []netip.Prefix{netip.PrefixFrom(p.IPv4, 24), netip.PrefixFrom(p.IPv6, 64)},
	}); err != nil {
		b.t.Fatalf("create pod %s: %v", name, err)
	}
	// Many short connections: a wide port range, and reuse of TIME_WAIT
	// ports for new outgoing connections.
	b.ip("netns", "exec", p.NetnsName, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+p.NetnsName, &st); err != nil {
		b.t.Fatalf("stat netns %s: %v", p.NetnsName, err)
	}
	p.Netns = uint32(st.Ino)

	roots := b.cgRoots
	if opts.V1Only {
		roots.V2 = ""
	}
	if opts.MemoryLimit > 0 && roots.MemoryV1 == "" {
		b.t.Skip("no v1 memory cgroup hierarchy to limit memory in")
	}
	if roots.V2 != "" || roots.MemoryV1 != "" {
		// The v1 memory limit comes without swap: the hog must be
		// OOM-killed, not swapped out.
		g, err := roots.Create(b.cgBase, cgroups.ContainerPath(corev1.PodQOSBurstable, p.UID, p.ContainerID), opts.MemoryLimit)
		if err != nil {
			b.t.Fatalf("create cgroups of %s: %v", name, err)
		}
		p.CgroupV2, p.MemoryCgroup = g.V2, g.MemoryV1
		p.Cgroups = g.Dirs()
	}
	return p
}

// CorePod returns the Kubernetes object the kubelet would report for p.
func (p *Pod) CorePod(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: types.UID(p.UID), Labels: p.Labels},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: p.ContainerName, Image: "test"}},
		},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			PodIP:  p.IPv4.String(),
			PodIPs: []corev1.PodIP{{IP: p.IPv4.String()}, {IP: p.IPv6.String()}},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: p.ContainerName, ContainerID: "containerd://" + p.ContainerID, Ready: true,
			}},
		},
	}
}

// CorePods returns the Kubernetes objects of every pod of the bed.
func (b *Bed) CorePods(node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range b.pods {
		out = append(out, p.CorePod(node))
	}
	return out
}

// Proc is a helper process running in a pod.
type Proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	err   error
	out   strings.Builder
	mu    sync.Mutex
}

// Start runs the test binary in role inside the pod's netns and cgroups, and
// waits until it prints "ready" (roles that serve) or just starts it.
func (b *Bed) Start(p *Pod, role string, args ...string) *Proc {
	b.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.t.Fatalf("find test binary: %v", err)
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), envRole+"="+role, envCgroups+"="+strings.Join(p.Cgroups, ":"),
		envNetns+"=/run/netns/"+p.NetnsName)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.t.Fatalf("pipe: %v", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr := &Proc{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	// Pdeathsig fires when the *thread* that forked the child exits, not
	// the process, and the Go runtime retires threads (any goroutine that
	// ends locked to its thread destroys it). Fork from a pinned thread and
	// keep it until the child is reaped, as pkg/lab/process does, or the
	// helpers die at random.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			<-pr.done
		}
	}()
	if err := <-started; err != nil {
		b.t.Fatalf("start %s in %s: %v", role, p.Name, err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, pr)
	b.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			pr.mu.Lock()
			pr.out.WriteString(line + "\n")
			pr.mu.Unlock()
			select {
			case pr.lines <- line:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		pr.err = cmd.Wait()
		close(pr.lines)
		close(pr.done)
	}()
	return pr
}

// StartReady is Start followed by waiting for the "ready" line.
func (b *Bed) StartReady(p *Pod, role string, args ...string) *Proc {
	b.t.Helper()
	pr := b.Start(p, role, args...)
	if err := pr.WaitLine("ready", 10*time.Second); err != nil {
		b.t.Fatalf("%s in %s: %v", role, p.Name, err)
	}
	return pr
}

// WaitLine waits for a line with the given prefix.
func (pr *Proc) WaitLine(prefix string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-pr.lines:
			if !ok {
				return fmt.Errorf("exited (%v) before printing %q; output:\n%s", pr.err, prefix, pr.Output())
			}
			if strings.HasPrefix(line, prefix) {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("no %q line within %s; output:\n%s", prefix, timeout, pr.Output())
		}
	}
}

// Wait waits for the process to exit, at most timeout, and returns its
// exit error.
func (pr *Proc) Wait(timeout time.Duration) error {
	select {
	case <-pr.done:
		return pr.err
	case <-time.After(timeout):
		return fmt.Errorf("still running after %s", timeout)
	}
}

// Output returns what the process printed on stdout so far.
func (pr *Proc) Output() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.out.String()
}

// Kill ends the process.
func (pr *Proc) Kill() {
	if pr.cmd.Process != nil {
		_ = pr.cmd.Process.Kill()
	}
	select {
	case <-pr.done:
	case <-time.After(5 * time.Second):
	}
}

func (b *Bed) cleanup() {
	b.mu.Lock()
	procs := b.procs
	b.mu.Unlock()
	for _, pr := range procs {
		pr.Kill()
	}
	// Kill whatever is still in the bed's cgroups, then remove them.
	_ = b.cgRoots.RemoveAll(b.cgBase)
	ctx := context.Background()
	for _, p := range b.pods {
		_ = podnet.DeleteNetns(ctx, p.NetnsName)
	}
	_ = podnet.DeleteNetns(ctx, b.bridge)
}

func (b *Bed) ip(args ...string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func uuid() string {
	h := randHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// PID returns the process id of the helper.
func (pr *Proc) PID() int { return pr.cmd.Process.Pid }
