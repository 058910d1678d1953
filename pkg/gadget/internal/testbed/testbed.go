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
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/enrich"
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
	t      testing.TB
	id     string
	bridge string
	pods   []*Pod
	cgRoot struct{ v2, mem string }
	cgBase []string // per-bed parent cgroups, removed at cleanup

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
	if root, err := enrich.Cgroup2Root("/proc"); err == nil {
		b.cgRoot.v2 = root
	}
	if root, err := enrich.CgroupV1Root("/proc", "memory"); err == nil {
		b.cgRoot.mem = root
	}
	t.Cleanup(b.cleanup)
	b.ip("netns", "add", b.bridge)
	b.ip("-n", b.bridge, "link", "set", "lo", "up")
	b.ip("-n", b.bridge, "link", "add", "br0", "type", "bridge")
	b.ip("-n", b.bridge, "link", "set", "br0", "up")
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
	veth := fmt.Sprintf("v%d", n)
	b.ip("netns", "add", p.NetnsName)
	b.ip("-n", b.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.NetnsName)
	b.ip("-n", b.bridge, "link", "set", veth, "master", "br0", "up")
	b.ip("-n", p.NetnsName, "link", "set", "lo", "up")
	b.ip("-n", p.NetnsName, "addr", "add", p.IPv4.String()+"/24", "dev", "eth0")
	b.ip("-n", p.NetnsName, "addr", "add", p.IPv6.String()+"/64", "dev", "eth0", "nodad")
	b.ip("-n", p.NetnsName, "link", "set", "eth0", "up")
	// Many short connections: a wide port range, and reuse of TIME_WAIT
	// ports for new outgoing connections.
	b.ip("netns", "exec", p.NetnsName, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+p.NetnsName, &st); err != nil {
		b.t.Fatalf("stat netns %s: %v", p.NetnsName, err)
	}
	p.Netns = uint32(st.Ino)

	rel := filepath.Join("kdiag-test-"+b.id, "kubepods", "burstable", "pod"+p.UID, p.ContainerID)
	for _, root := range []string{b.cgRoot.v2, b.cgRoot.mem} {
		if root == "" || (opts.V1Only && root == b.cgRoot.v2) {
			continue
		}
		dir := filepath.Join(root, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.t.Fatalf("create cgroup %s: %v", dir, err)
		}
		b.addBase(filepath.Join(root, "kdiag-test-"+b.id))
		p.Cgroups = append(p.Cgroups, dir)
		if root == b.cgRoot.v2 {
			p.CgroupV2 = dir
		} else {
			p.MemoryCgroup = dir
		}
	}
	if opts.MemoryLimit > 0 {
		if p.MemoryCgroup == "" {
			b.t.Skip("no v1 memory cgroup hierarchy to limit memory in")
		}
		lim := strconv.FormatInt(opts.MemoryLimit, 10)
		if err := os.WriteFile(filepath.Join(p.MemoryCgroup, "memory.limit_in_bytes"), []byte(lim), 0o644); err != nil {
			b.t.Fatalf("limit memory of %s: %v", p.MemoryCgroup, err)
		}
		// No swap: the hog must be OOM-killed, not swapped out.
		_ = os.WriteFile(filepath.Join(p.MemoryCgroup, "memory.swappiness"), []byte("0"), 0o644)
	}
	return p
}

func (b *Bed) addBase(dir string) {
	for _, d := range b.cgBase {
		if d == dir {
			return
		}
	}
	b.cgBase = append(b.cgBase, dir)
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
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start %s in %s: %v", role, p.Name, err)
	}
	pr := &Proc{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
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
	for _, base := range b.cgBase {
		killCgroupTree(base)
	}
	for _, base := range b.cgBase {
		removeCgroupTree(base)
	}
	for _, p := range b.pods {
		_ = exec.Command("ip", "netns", "del", p.NetnsName).Run()
	}
	_ = exec.Command("ip", "netns", "del", b.bridge).Run()
}

func killCgroupTree(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}

// removeCgroupTree removes cgroup directories bottom-up, retrying while
// killed tasks finish exiting.
func removeCgroupTree(dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var dirs []string
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		var failed error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				failed = err
			}
		}
		if failed == nil || time.Now().After(deadline) {
			return
		}
		killCgroupTree(dir)
		time.Sleep(50 * time.Millisecond)
	}
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
