package agent

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
)

// DefaultReportInterval is the least time between two reports the agent
// records by itself.
const DefaultReportInterval = 10 * time.Minute

// reporter takes a report when the node degrades and stores it in the
// report ConfigMap: at most one per interval for the agent's own
// conditions, and, separately, at most one per interval for the Ready
// condition, so that a node going NotReady is always recorded even right
// after a report on, say, disk usage.
type reporter struct {
	a        *Agent
	diag     *diagnose.Diagnoser
	interval time.Duration
	trigger  chan trigger

	mu   sync.Mutex
	bad  map[string]bool    // condition type -> last seen True
	last map[bool]time.Time // last report taken, by whether Ready triggered it
	got  *diagnose.Report
}

// trigger is one reason to take a report.
type trigger struct {
	why   string
	ready bool // the Ready condition, not one of the agent's
}

// newReporter returns a reporter; interval 0 means DefaultReportInterval,
// a negative one turns automatic reports off (interval 0 after this).
// Conditions already True in resume (read from the Node at start) do not
// trigger a report: the agent that saw them turn True recorded it, and a
// restart must not spend the interval on an old problem. Ready is not
// seeded: a node that is NotReady when the agent starts is recorded. Its
// diag is set before it runs.
func newReporter(a *Agent, interval time.Duration, resume map[string]nodehealth.Condition) *reporter {
	switch {
	case interval == 0:
		interval = DefaultReportInterval
	case interval < 0:
		interval = 0
	}
	r := &reporter{a: a, interval: interval, trigger: make(chan trigger, 2), bad: map[string]bool{}, last: map[bool]time.Time{}}
	for typ, c := range resume {
		if typ != string(corev1.NodeReady) {
			r.bad[typ] = c.Status
		}
	}
	return r
}

// SetCondition triggers a report when one of the agent's conditions turns
// True (a problem); it is a nodehealth.Sink.
func (r *reporter) SetCondition(_ string, c nodehealth.Condition) {
	r.observe(c.Type, c.Status, c.Reason)
}

// Emit ignores events: they are temporary, conditions say the node degrades.
func (r *reporter) Emit(nodehealth.Event) {}

// observe records a condition's state and triggers on a turn to bad.
func (r *reporter) observe(typ string, bad bool, reason string) {
	r.mu.Lock()
	was := r.bad[typ]
	r.bad[typ] = bad
	r.mu.Unlock()
	if !bad || was {
		return
	}
	tr := trigger{why: typ + "=True", ready: typ == string(corev1.NodeReady)}
	if tr.ready {
		tr.why = "Ready is not True"
	}
	if reason != "" {
		tr.why += " (" + reason + ")"
	}
	select {
	case r.trigger <- tr:
	default: // reports are pending already
	}
}

// watchReady watches the agent's own Node (field selector
// metadata.name) and triggers when its Ready condition turns False or Unknown.
func (r *reporter) watchReady(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(r.a.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.a.opts.Node).String()
	}))
	inf := f.Core().V1().Nodes().Informer()
	// Only the Ready condition is kept: a Node's status (images above all)
	// can be large, and the informer's cache would hold it all.
	_ = inf.SetTransform(func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Node); ok {
			slim := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion}}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					slim.Status.Conditions = []corev1.NodeCondition{c}
				}
			}
			return slim, nil
		}
		return obj, nil
	})
	see := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				r.observe(string(corev1.NodeReady), c.Status != corev1.ConditionTrue, c.Reason)
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, n any) { see(n) }}); err != nil {
		r.a.problem(fmt.Errorf("NotReady reports: watch node %s: %w", r.a.opts.Node, err))
		return
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
}

// run takes and stores a report per trigger, at most once per interval.
func (r *reporter) run(ctx context.Context) {
	for {
		var tr trigger
		select {
		case <-ctx.Done():
			return
		case tr = <-r.trigger:
		}
		why := tr.why
		r.mu.Lock()
		last := r.last[tr.ready]
		wait := r.interval - time.Since(last)
		skip := !last.IsZero() && wait > 0
		if !skip {
			r.last[tr.ready] = time.Now()
		}
		r.mu.Unlock()
		if skip {
			r.a.log.Info("node degraded; no report: the last one is recent", "trigger", why, "next in", wait.Round(time.Second))
			continue
		}
		rep := r.diag.Diagnose(ctx, why)
		r.mu.Lock()
		r.got = rep
		r.mu.Unlock()
		r.a.log.Warn("node degraded; diagnostic recorded", "trigger", why, "verdict", rep.Verdict.Summary)
		r.store(ctx, rep)
	}
}

// store writes the report, retrying while the API server is unreachable
// (a NotReady node is often cut off), until the next report may be taken.
func (r *reporter) store(ctx context.Context, rep *diagnose.Report) {
	deadline := time.Now().Add(r.interval)
	backoff := 2 * time.Second
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := diagnose.Store(sctx, r.a.cs, rep)
		cancel()
		if err == nil {
			r.a.metrics.APIWrites.WithLabelValues("node_report", "ok").Inc()
			return
		}
		r.a.metrics.APIWrites.WithLabelValues("node_report", "error").Inc()
		r.a.log.Warn("cannot store the node report yet; retrying", "err", err, "in", backoff)
		if time.Now().Add(backoff).After(deadline) {
			r.a.problem(fmt.Errorf("node report of %s not stored: %w", rep.Time.Format(time.RFC3339), err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// latest returns the last report the agent recorded by itself, or nil.
func (r *reporter) latest() *diagnose.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// diagnoseHandler serves GET /diagnose: a fresh report as JSON, or as text
// with ?format=text; ?latest=true returns the last automatic report instead.
func (a *Agent) diagnoseHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		a.mu.Lock()
		rp := a.reporter
		a.mu.Unlock()
		if rp == nil {
			http.Error(w, "not ready: the agent has not started its diagnostic yet", http.StatusServiceUnavailable)
			return
		}
		var rep *diagnose.Report
		if req.URL.Query().Get("latest") == "true" {
			if rep = rp.latest(); rep == nil {
				http.Error(w, "no automatic report since the agent started", http.StatusNotFound)
				return
			}
		} else {
			rep = rp.diag.Diagnose(req.Context(), "request")
		}
		switch f := req.URL.Query().Get("format"); f {
		case "text":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_ = rep.WriteText(w)
		case "", "json":
			b, err := rep.JSON()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(b, '\n'))
		default:
			http.Error(w, fmt.Sprintf("format %q: want json or text", f), http.StatusBadRequest)
		}
	})
}
