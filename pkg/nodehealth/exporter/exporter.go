// Package exporter writes the agent's conditions and events through the
// API server: node conditions as one coalesced strategic-merge patch of
// nodes/status per change plus a heartbeat, Events on the Node for
// problems, and OOM-kill Events on the victim's Pod.
package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/metrics"
)

// Options tune an Exporter.
type Options struct {
	// Heartbeat is how often all conditions are re-patched with a new
	// lastHeartbeatTime when nothing changes (default 5m, as NPD).
	Heartbeat time.Duration
	// Coalesce is how long to wait after a change for more changes to
	// join the same patch (default 100ms).
	Coalesce time.Duration
	// Pods resolves OOM-kill victims; nil puts OOM events on the Node only.
	Pods PodResolver
	// Metrics, when set, counts API writes.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Component names the event source (default kdiag-agent).
	Component string
}

// Exporter is a nodehealth.Sink that writes to the API server.
type Exporter struct {
	cs   kubernetes.Interface
	node string
	opts Options
	log  *slog.Logger

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	mu      sync.Mutex
	conds   map[string]nodehealth.Condition
	dirty   bool
	changed chan struct{}
	patches int
	failing error     // the last patch error, nil after a success
	since   time.Time // when patches started failing
}

// New builds an exporter for node. Events are written from now on;
// conditions once Run runs. Run must be called to release the event writer.
func New(cs kubernetes.Interface, node string, opts Options) *Exporter {
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Minute
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Component == "" {
		opts.Component = "kdiag-agent"
	}
	e := &Exporter{cs: cs, node: node, opts: opts, log: opts.Logger,
		conds: map[string]nodehealth.Condition{}, changed: make(chan struct{}, 1)}
	// client-go's broadcaster aggregates repeated events and rate-limits
	// them per object, which is what a flood of kernel lines needs.
	e.broadcaster = record.NewBroadcaster()
	e.recorder = e.broadcaster.NewRecorder(eventScheme(), corev1.EventSource{Component: opts.Component, Host: node})
	// The sink starts now, not in Run: the broadcaster drops events sent
	// while it has no watcher. Run's end shuts it down.
	e.broadcaster.StartRecordingToSink(&countingSink{
		EventSinkImpl: typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")}, e: e})
	return e
}

// Resume reads the Node's current conditions, so that monitors continue
// from them after a restart instead of resetting them.
func (e *Exporter) Resume(ctx context.Context) (map[string]nodehealth.Condition, error) {
	n, err := e.cs.CoreV1().Nodes().Get(ctx, e.node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read node %s to resume its conditions: %w", e.node, err)
	}
	out := map[string]nodehealth.Condition{}
	for _, c := range n.Status.Conditions {
		out[string(c.Type)] = nodehealth.Condition{
			Type: string(c.Type), Status: c.Status == corev1.ConditionTrue, Reason: c.Reason,
			Message: c.Message, Transition: c.LastTransitionTime.Time,
		}
	}
	return out, nil
}

// SetCondition records a condition; Run patches it.
func (e *Exporter) SetCondition(_ string, c nodehealth.Condition) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.conds[c.Type]; ok && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
		return
	}
	e.conds[c.Type] = c
	e.dirty = true
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// Emit records an Event on the Node, and for an OOM kill in a pod also on
// the Pod, naming the container, its memory limit and its usage.
func (e *Exporter) Emit(ev nodehealth.Event) {
	ref := &corev1.ObjectReference{Kind: "Node", Name: e.node, UID: types.UID(e.node)}
	typ := corev1.EventTypeWarning
	if ev.Normal {
		typ = corev1.EventTypeNormal
	}
	e.recorder.Event(ref, typ, ev.Reason, ev.Message)
	if ev.OOM == nil || ev.OOM.PodUID == "" || e.opts.Pods == nil {
		return
	}
	pod, ok := e.opts.Pods.PodByUID(ev.OOM.PodUID)
	if !ok {
		e.log.Warn("OOM kill in a pod this node does not know", "podUID", ev.OOM.PodUID, "task", ev.OOM.Task)
		return
	}
	e.recorder.Event(pod, corev1.EventTypeWarning, ev.Reason, OOMMessage(pod, ev.OOM))
}

// Run starts the event writer and patches conditions until ctx ends:
// after each change (coalesced) and at every heartbeat.
func (e *Exporter) Run(ctx context.Context) error {
	defer e.broadcaster.Shutdown()
	hb := time.NewTicker(e.opts.Heartbeat)
	defer hb.Stop()
	retry := time.Duration(0)
	var retryC <-chan time.Time
	for {
		heartbeat := false
		select {
		case <-ctx.Done():
			return nil
		case <-e.changed:
			// Let further changes join this patch.
			select {
			case <-time.After(e.opts.Coalesce):
			case <-ctx.Done():
				return nil
			}
		case <-hb.C:
			heartbeat = true
		case <-retryC:
		}
		if err := e.flush(ctx, heartbeat); err != nil {
			retry = min(max(2*retry, 500*time.Millisecond), 30*time.Second)
			e.log.Warn("patch node conditions; will retry", "node", e.node, "in", retry, "err", err)
			retryC = time.After(retry)
			continue
		}
		retry, retryC = 0, nil
	}
}

// flush sends one patch with every condition when some changed or at a heartbeat.
func (e *Exporter) flush(ctx context.Context, heartbeat bool) error {
	e.mu.Lock()
	if !e.dirty && !heartbeat {
		e.mu.Unlock()
		return nil
	}
	conds := make([]nodehealth.Condition, 0, len(e.conds))
	for _, c := range e.conds {
		conds = append(conds, c)
	}
	e.dirty = false
	e.mu.Unlock()
	if len(conds) == 0 {
		return nil
	}
	sort.Slice(conds, func(i, j int) bool { return conds[i].Type < conds[j].Type })
	body, err := ConditionsPatch(conds, time.Now())
	if err != nil {
		return err
	}
	_, err = e.cs.CoreV1().Nodes().PatchStatus(ctx, e.node, body)
	e.count("condition_patch", err)
	if err != nil {
		err = fmt.Errorf("patch nodes/%s/status: %w", e.node, err)
		e.mu.Lock()
		e.dirty = true
		if e.failing == nil {
			e.since = time.Now()
		}
		e.failing = err
		e.mu.Unlock()
		return err
	}
	e.mu.Lock()
	e.patches++
	e.failing = nil
	e.mu.Unlock()
	return nil
}

// Failing returns since when condition patches have been failing and the
// last error, or a nil error when the last patch succeeded.
func (e *Exporter) Failing() (since time.Time, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.since, e.failing
}

// Patches returns how many condition patches succeeded.
func (e *Exporter) Patches() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.patches
}

func (e *Exporter) count(kind string, err error) {
	if e.opts.Metrics == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	e.opts.Metrics.APIWrites.WithLabelValues(kind, res).Inc()
}

// ConditionsPatch builds the strategic merge patch of nodes/status that
// sets conds. NodeStatus.conditions merges by type, so the kubelet's and
// other writers' conditions stay untouched.
func ConditionsPatch(conds []nodehealth.Condition, now time.Time) ([]byte, error) {
	type cond struct {
		Type               string      `json:"type"`
		Status             string      `json:"status"`
		Reason             string      `json:"reason"`
		Message            string      `json:"message"`
		LastHeartbeatTime  metav1.Time `json:"lastHeartbeatTime"`
		LastTransitionTime metav1.Time `json:"lastTransitionTime"`
	}
	var p struct {
		Status struct {
			Conditions []cond `json:"conditions"`
		} `json:"status"`
	}
	for _, c := range conds {
		st := corev1.ConditionFalse
		if c.Status {
			st = corev1.ConditionTrue
		}
		tt := c.Transition
		if tt.IsZero() {
			tt = now
		}
		p.Status.Conditions = append(p.Status.Conditions, cond{
			Type: c.Type, Status: string(st), Reason: c.Reason, Message: c.Message,
			LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(tt),
		})
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode condition patch: %w", err)
	}
	return b, nil
}
