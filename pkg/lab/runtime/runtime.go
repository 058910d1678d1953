package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/cgroups"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

// Back-off between restarts of a container that exited, as the kubelet's:
// the first restart is immediate, the next after BackOff, doubled after
// each restart up to MaxBackOff, and reset once a container ran for
// resetBackOffAfter.
const (
	DefaultBackOff    = 10 * time.Second
	DefaultMaxBackOff = 5 * time.Minute
	resetBackOffAfter = 10 * time.Minute
	// maxStopGrace caps a pod's terminationGracePeriodSeconds: the lab
	// does not wait 30 s for a program that ignores SIGTERM.
	maxStopGrace = 5 * time.Second
)

// Options configure a Runtime.
type Options struct {
	// Resolver decides which containers run and how (required).
	Resolver Resolver
	// Network is the lab's node network, where pods get their namespaces.
	Network podnet.Network
	// Cgroups are the hierarchies, and Parent the lab's directory in them.
	Cgroups cgroups.Roots
	Parent  cgroups.Parent
	// Dir holds one directory per pod: logs and volumes.
	Dir string
	// Client reads the ConfigMaps of configMap volumes and env references.
	Client kubernetes.Interface
	// Env is added to every container's environment (before the
	// resolver's), such as KUBERNETES_SERVICE_HOST.
	Env []string
	// BackOff and MaxBackOff bound the restart delays (defaults
	// DefaultBackOff and DefaultMaxBackOff).
	BackOff, MaxBackOff time.Duration
	// Notify is called, from any goroutine, with the pod's
	// "namespace/name" whenever its status changed.
	Notify func(key string)
	// Logger receives the runtime's logs (default: discarded).
	Logger *slog.Logger
}

// Runtime runs the real pods of one simulated kubelet process.
type Runtime struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	pods map[types.UID]*podRun
	// simulated remembers the pods the resolver declined, by UID with
	// their "namespace/name", so that they are not resolved again at every
	// sync.
	simulated map[types.UID]string
}

// New returns a Runtime; it starts nothing until Sync.
func New(opts Options) (*Runtime, error) {
	if opts.Resolver == nil {
		return nil, errors.New("runtime: no resolver")
	}
	if opts.Dir == "" {
		return nil, errors.New("runtime: no directory for pods")
	}
	if opts.BackOff <= 0 {
		opts.BackOff = DefaultBackOff
	}
	if opts.MaxBackOff <= 0 {
		opts.MaxBackOff = DefaultMaxBackOff
	}
	if opts.Notify == nil {
		opts.Notify = func(string) {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runtime{opts: opts, log: opts.Logger, pods: map[types.UID]*podRun{}, simulated: map[types.UID]string{}}, nil
}

// Network returns the node network the runtime's pods are on.
func (r *Runtime) Network() podnet.Network { return r.opts.Network }

// podRun is one real pod.
type podRun struct {
	key    string // namespace/name
	uid    types.UID
	dir    string
	net    podnet.Pod
	cancel context.CancelFunc
	done   chan struct{} // closed when every container loop ended
	conts  []*containerRun
}

// PodDir returns the directory of a pod (kubelet's /var/log/pods layout):
// DIR/<namespace>_<name>_<uid>.
func (r *Runtime) PodDir(namespace, name string, uid types.UID) string {
	return filepath.Join(r.opts.Dir, namespace+"_"+name+"_"+string(uid))
}

// Runs reports whether the pod runs for real (Sync started it).
func (r *Runtime) Runs(uid types.UID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pods[uid] != nil
}

// Sync makes sure a pod that can run for real runs: on first sight it
// resolves every container; when one is not runnable the pod is simulated
// (false, for good). addr is the pod's IP with its node's podCIDR length,
// gw its node's gateway. A pod already running is left alone.
func (r *Runtime) Sync(ctx context.Context, pod *corev1.Pod, addr netip.Prefix, gw netip.Addr) (bool, error) {
	r.mu.Lock()
	if r.pods[pod.UID] != nil {
		r.mu.Unlock()
		return true, nil
	}
	if _, sim := r.simulated[pod.UID]; sim {
		r.mu.Unlock()
		return false, nil
	}
	r.mu.Unlock()
	if pod.Spec.HostNetwork || len(pod.Spec.InitContainers) > 0 {
		// Neither is needed by the lab's programs; such pods stay simulated.
		r.markSimulated(pod)
		return false, nil
	}

	dir := r.PodDir(pod.Namespace, pod.Name, pod.UID)
	vols, err := r.materializeVolumes(ctx, pod, dir)
	if err != nil {
		return false, err
	}
	env := map[string][]string{}
	cmds := make([]Command, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		e, err := r.containerEnv(ctx, pod, c, addr.Addr())
		if err != nil {
			return false, fmt.Errorf("environment of container %s of pod %s/%s: %w", c.Name, pod.Namespace, pod.Name, err)
		}
		env[c.Name] = e
		expanded := expandContainer(c, e)
		cmd, ok, err := r.opts.Resolver(ctx, pod, expanded, mountsOf(c, vols))
		if err != nil {
			return false, err
		}
		if !ok {
			r.markSimulated(pod)
			return false, nil
		}
		cmds[i] = cmd
	}

	pn, err := r.opts.Network.AddPod(ctx, string(pod.UID), addr, gw)
	if err != nil {
		return false, fmt.Errorf("network of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pr := &podRun{key: pod.Namespace + "/" + pod.Name, uid: pod.UID, dir: dir, net: pn, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := range pod.Spec.Containers {
		c := pod.Spec.Containers[i].DeepCopy()
		cr := &containerRun{
			rt: r, pod: pr, spec: c, qos: qosOf(pod), policy: pod.Spec.RestartPolicy,
			grace: stopGrace(pod), cmd: cmds[i], env: env[c.Name], podIP: addr.Addr(),
			state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		}
		pr.conts = append(pr.conts, cr)
	}
	r.mu.Lock()
	r.pods[pod.UID] = pr
	r.mu.Unlock()
	for _, cr := range pr.conts {
		wg.Go(func() { cr.loop(pctx) })
	}
	if len(vols) > 0 {
		wg.Go(func() { r.refreshVolumes(pctx, pod.DeepCopy(), dir) })
	}
	go func() {
		wg.Wait()
		close(pr.done)
	}()
	r.log.Info("pod runs for real", "pod", pr.key, "ip", addr.Addr(), "netns", pn.Netns)
	return true, nil
}

func (r *Runtime) markSimulated(pod *corev1.Pod) {
	r.mu.Lock()
	r.simulated[pod.UID] = pod.Namespace + "/" + pod.Name
	r.mu.Unlock()
}

// Remove stops a pod's containers (SIGTERM, then SIGKILL after its grace
// period, at most a few seconds) and frees its namespace and cgroups. Logs
// stay. Removing a pod that does not run is fine.
func (r *Runtime) Remove(ctx context.Context, uid types.UID) error {
	r.mu.Lock()
	pr := r.pods[uid]
	delete(r.simulated, uid)
	r.mu.Unlock()
	if pr == nil {
		return nil
	}
	pr.cancel()
	select {
	case <-pr.done:
	case <-ctx.Done():
		return fmt.Errorf("stop pod %s: %w", pr.key, ctx.Err())
	}
	err := r.opts.Network.DeletePod(ctx, pr.net.Netns)
	r.mu.Lock()
	delete(r.pods, uid)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("remove network of pod %s: %w", pr.key, err)
	}
	return nil
}

// RemoveKey is Remove for the pod "namespace/name", for a pod whose
// object is gone.
func (r *Runtime) RemoveKey(ctx context.Context, key string) error {
	r.mu.Lock()
	var uid types.UID
	for u, pr := range r.pods {
		if pr.key == key {
			uid = u
		}
	}
	for u, k := range r.simulated {
		if k == key {
			delete(r.simulated, u)
		}
	}
	r.mu.Unlock()
	if uid == "" {
		return nil
	}
	return r.Remove(ctx, uid)
}

// Forget drops what the runtime remembers of a simulated pod.
func (r *Runtime) Forget(uid types.UID) {
	r.mu.Lock()
	delete(r.simulated, uid)
	r.mu.Unlock()
}

// Shutdown removes every pod, for a kubelet that stops.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	uids := make([]types.UID, 0, len(r.pods))
	for uid := range r.pods {
		uids = append(uids, uid)
	}
	r.mu.Unlock()
	// In parallel: each pod may take its grace period to stop.
	errs := make([]error, len(uids))
	var wg sync.WaitGroup
	for i, uid := range uids {
		wg.Go(func() { errs[i] = r.Remove(ctx, uid) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PodState is what the runtime knows of a real pod.
type PodState struct {
	// Containers holds one status per container of the spec, in order;
	// Image and ImageID are left to the caller.
	Containers []corev1.ContainerStatus
	// Phase is Pending until every container started once, Succeeded or
	// Failed once every container terminated for good, else Running.
	Phase corev1.PodPhase
	// Ready is true when every container runs and passes its readiness
	// probe.
	Ready bool
	// Netns is the pod's network namespace name.
	Netns string
}

// State returns a real pod's state; ok is false for a pod that does not
// run for real.
func (r *Runtime) State(uid types.UID) (PodState, bool) {
	r.mu.Lock()
	pr := r.pods[uid]
	r.mu.Unlock()
	if pr == nil {
		return PodState{}, false
	}
	st := PodState{Ready: true, Netns: pr.net.Netns}
	started, terminated, failed := 0, 0, false
	for _, cr := range pr.conts {
		cs := cr.status()
		st.Containers = append(st.Containers, cs)
		if !cs.Ready {
			st.Ready = false
		}
		if cs.ContainerID != "" || cs.RestartCount > 0 {
			started++
		}
		if t := cs.State.Terminated; t != nil {
			terminated++
			if t.ExitCode != 0 {
				failed = true
			}
		}
	}
	switch {
	case started < len(pr.conts):
		st.Phase = corev1.PodPending
	case terminated == len(pr.conts) && failed:
		st.Phase = corev1.PodFailed
	case terminated == len(pr.conts):
		st.Phase = corev1.PodSucceeded
	default:
		st.Phase = corev1.PodRunning
	}
	return st, true
}

// LogFile returns the log file of a container of a real pod, in the CRI
// log format (see ParseLogLine): the current run's, or with previous the
// one before (the kubelet's <container>/<restartCount>.log). running
// reports whether that run's process still writes to it.
func (r *Runtime) LogFile(uid types.UID, container string, previous bool) (path string, running bool, err error) {
	r.mu.Lock()
	pr := r.pods[uid]
	r.mu.Unlock()
	if pr == nil {
		return "", false, errors.New("the pod does not run on this machine")
	}
	for _, cr := range pr.conts {
		if cr.spec.Name != container {
			continue
		}
		cr.mu.Lock()
		defer cr.mu.Unlock()
		n := cr.restarts
		if previous {
			if n == 0 {
				return "", false, fmt.Errorf("previous terminated container %q in pod %q not found", container, pr.key)
			}
			return cr.logPath(n - 1), false, nil
		}
		return cr.logPath(n), cr.state.Running != nil, nil
	}
	return "", false, fmt.Errorf("container %s is not valid for pod %s", container, pr.key)
}

// containerRun is one container of a real pod, restarted by loop.
type containerRun struct {
	rt     *Runtime
	pod    *podRun
	spec   *corev1.Container
	qos    corev1.PodQOSClass
	policy corev1.RestartPolicy
	grace  time.Duration
	cmd    Command
	env    []string
	podIP  netip.Addr

	mu       sync.Mutex
	id       string // current or last container ID, bare
	restarts int32
	state    corev1.ContainerState
	last     corev1.ContainerState
	ready    bool
}

func (cr *containerRun) logPath(restart int32) string {
	return filepath.Join(cr.pod.dir, cr.spec.Name, strconv.Itoa(int(restart))+".log")
}

func (cr *containerRun) status() corev1.ContainerStatus {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cs := corev1.ContainerStatus{
		Name:                 cr.spec.Name,
		RestartCount:         cr.restarts,
		State:                *cr.state.DeepCopy(),
		LastTerminationState: *cr.last.DeepCopy(),
		Ready:                cr.ready && cr.state.Running != nil,
		Started:              new(cr.state.Running != nil),
	}
	if cr.id != "" {
		cs.ContainerID = "containerd://" + cr.id
	}
	return cs
}

func (cr *containerRun) set(f func()) {
	cr.mu.Lock()
	f()
	cr.mu.Unlock()
	cr.rt.opts.Notify(cr.pod.key)
}

// loop runs the container until ctx ends or the restart policy says stop.
func (cr *containerRun) loop(ctx context.Context) {
	// As the kubelet: the first restart is at once, then after BackOff,
	// doubling up to MaxBackOff; a run longer than resetBackOffAfter
	// starts over.
	var backOff time.Duration
	for {
		began := time.Now()
		exit, err := cr.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > resetBackOffAfter {
			backOff = 0
		}
		switch {
		case err != nil:
			cr.rt.log.Warn("container did not start", "pod", cr.pod.key, "container", cr.spec.Name, "err", err)
			cr.set(func() {
				cr.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}}
			})
		case !cr.restart(exit.ExitCode):
			cr.set(func() { cr.state = corev1.ContainerState{Terminated: exit} })
			return
		default:
			cr.set(func() {
				cr.last = corev1.ContainerState{Terminated: exit}
				cr.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
				if backOff > 0 {
					cr.state.Waiting = &corev1.ContainerStateWaiting{
						Reason:  "CrashLoopBackOff",
						Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backOff, cr.spec.Name, nameOf(cr.pod.key), nsOf(cr.pod.key), cr.pod.uid),
					}
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backOff):
		}
		if backOff == 0 {
			backOff = cr.rt.opts.BackOff
		} else {
			backOff = min(2*backOff, cr.rt.opts.MaxBackOff)
		}
		if err == nil {
			cr.mu.Lock()
			cr.restarts++
			cr.mu.Unlock()
		}
	}
}

// restart applies the pod's restartPolicy to an exit code.
func (cr *containerRun) restart(code int32) bool {
	switch cr.policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// runOnce starts one run of the container in a fresh cgroup and waits for
// it to end (or kills it when ctx ends). It returns how it ended.
func (cr *containerRun) runOnce(ctx context.Context) (*corev1.ContainerStateTerminated, error) {
	id := newContainerID()
	rt := cr.rt
	var limit int64
	if q, ok := cr.spec.Resources.Limits[corev1.ResourceMemory]; ok {
		limit = q.Value()
	}
	group, err := rt.opts.Cgroups.Create(rt.opts.Parent, cgroups.ContainerPath(cr.qos, string(cr.pod.uid), id), limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = group.Remove() }()
	cr.mu.Lock()
	logFile := cr.logPath(cr.restarts)
	cr.mu.Unlock()
	dir := cr.cmd.Dir
	if dir == "" {
		dir = cr.pod.dir
	}
	env := append(append(append([]string{}, baseEnv()...), cr.env...), cr.cmd.Env...)
	lf, err := OpenLogFile(logFile)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	stdout, stderr := lf.Stream("stdout"), lf.Stream("stderr")
	p, err := process.Start(process.Spec{
		Name: cr.pod.key + "/" + cr.spec.Name, Path: cr.cmd.Path, Args: cr.cmd.Args,
		Env: env, Dir: dir, LogFile: logFile, Stdout: stdout, Stderr: stderr,
		Netns: cr.pod.net.NetnsPath(), Cgroups: group.Dirs(), Cgroup2: rt.opts.Cgroups.V2,
	})
	// A container that exits before Start could record it did run: it
	// ends like any other run, with its exit code.
	if err != nil && (p == nil || !errors.Is(err, process.ErrExited)) {
		return nil, err
	}
	// Done means the output was copied: flush what had no newline.
	defer func() {
		_ = stdout.Flush()
		_ = stderr.Flush()
	}()
	started := metav1.NewTime(time.Now().Truncate(time.Second))
	cr.set(func() {
		cr.id = id
		cr.ready = cr.spec.ReadinessProbe == nil
		cr.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	})
	pctx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		cr.probe(pctx)
	}()
	select {
	case <-p.Done():
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), cr.grace+5*time.Second)
		_ = process.Stop(sctx, []process.Record{p.Record}, cr.grace)
		cancel()
		<-p.Done()
	}
	stopProbe()
	<-probeDone
	// The signal is not reported: the CRI has no field for it, so a
	// kubelet never sets it either.
	code, _ := exitCode(p.Err())
	t := &corev1.ContainerStateTerminated{
		ExitCode: code, StartedAt: started,
		FinishedAt: metav1.NewTime(time.Now().Truncate(time.Second)), ContainerID: "containerd://" + id,
	}
	oom, _ := group.OOMKills()
	switch {
	case oom > 0:
		t.Reason = "OOMKilled"
	case code == 0:
		t.Reason = "Completed"
	default:
		t.Reason = "Error"
	}
	cr.mu.Lock()
	cr.ready = false
	cr.mu.Unlock()
	return t, nil
}

// exitCode turns a wait error into the exit code a container runtime
// reports: the status, or 128+signal for a killed process.
func exitCode(err error) (code, signal int32) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err != nil {
			return 128, 0
		}
		return 0, 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal()), int32(ws.Signal())
	}
	return int32(ee.ExitCode()), 0
}

// baseEnv is the environment every container starts with, as an image's
// default PATH would give it.
func baseEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
}

func newContainerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// qosOf returns the pod's QoS class, from its status or computed from its
// requests and limits.
func qosOf(pod *corev1.Pod) corev1.PodQOSClass {
	if pod.Status.QOSClass != "" {
		return pod.Status.QOSClass
	}
	return ComputeQOS(pod)
}

// ComputeQOS is the QoS class of a pod's spec (Guaranteed: every container
// has CPU and memory limits equal to its requests; BestEffort: none has
// any; Burstable otherwise), for the containers the lab runs. It is
// hand-written because the kubelet's helper lives in k8s.io/kubernetes.
func ComputeQOS(pod *corev1.Pod) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range pod.Spec.Containers {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			l, hasL := c.Resources.Limits[res]
			rq, hasR := c.Resources.Requests[res]
			if !hasL || (hasR && rq.Cmp(l) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	default:
		return corev1.PodQOSBurstable
	}
}

// stopGrace is the pod's termination grace period, capped.
func stopGrace(pod *corev1.Pod) time.Duration {
	g := 30 * time.Second
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		g = time.Duration(*s) * time.Second
	}
	return min(g, maxStopGrace)
}

func nsOf(key string) string {
	for i := range key {
		if key[i] == '/' {
			return key[:i]
		}
	}
	return ""
}

func nameOf(key string) string {
	for i := range key {
		if key[i] == '/' {
			return key[i+1:]
		}
	}
	return key
}

// ensureDir creates a directory for files of the runtime.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
