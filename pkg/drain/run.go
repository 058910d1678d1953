package drain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/ops"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// RunOptions configure a real drain.
type RunOptions struct {
	Options
	// Timeout bounds the whole drain; 0 means 5 minutes (kubectl's default
	// is forever).
	Timeout time.Duration
	// RetryInterval is the wait after a refused eviction; 0 means 5 s, as
	// kubectl.
	RetryInterval time.Duration
	// Out receives kubectl-like lines ("node/x cordoned", "evicting pod ...").
	Out io.Writer
	// Progress, if set, receives retry notices (the CLI passes stderr only
	// on a terminal).
	Progress io.Writer
	// Record, if set, receives the drain's steps: one per cordon, one per
	// evicted pod (failed with the last refusal when the drain stalls).
	// Run does not finish it: RunRecorded does, or the caller that owns a
	// larger operation (a node repair drains before a reimage).
	Record *ops.Record
	// SkipWaitForDeleteTimeoutSeconds is kubectl drain's
	// --skip-wait-for-delete-timeout: a pod whose deletionTimestamp is more
	// than this many whole seconds in the past is not waited for (and not
	// evicted again if it was already terminating when the drain began).
	// 0 (the default) or a negative value waits for every pod, as kubectl.
	// It is meant for a
	// node whose kubelet is dead: nothing confirms the deletion of its pods,
	// which stay Terminating forever. The API server sets deletionTimestamp
	// to the eviction time plus the pod's grace period, so a pod is skipped
	// once its grace period and then this many seconds have passed.
	SkipWaitForDeleteTimeoutSeconds int
}

// SkipWaitForDelete reports whether a drain with
// SkipWaitForDeleteTimeoutSeconds skip does not wait for pod at now:
// kubectl drain's rule, skip > 0 and a deletionTimestamp more than skip
// whole seconds before now (kubectl truncates the age to whole seconds and
// compares with >). Written here rather than imported: k8s.io/kubectl's
// drain package would bring kubectl's whole command tree into the module
// for one comparison.
func SkipWaitForDelete(pod *corev1.Pod, skip int, now time.Time) bool {
	ts := pod.DeletionTimestamp
	if skip <= 0 || ts == nil || ts.IsZero() {
		return false
	}
	return int(now.Sub(ts.Time).Seconds()) > skip
}

// SkippedMessage is the step message of an evicted pod the drain stopped
// waiting for (SkipWaitForDeleteTimeoutSeconds).
func SkippedMessage(skip int) string {
	return fmt.Sprintf("evicted; deletionTimestamp older than %d seconds: not waited for (--skip-wait-for-delete-timeout)", skip)
}

// TerminatingMessage is the Refusal message of a pod whose eviction was
// granted but which was not deleted before the timeout (no PDB refused it).
const TerminatingMessage = "evicted but not deleted yet (terminating)"

// DefaultTimeout is the default bound of a drain.
const DefaultTimeout = 5 * time.Minute

// StalledError is returned when the drain timed out; it names the pods still
// refused and the budgets that refused them.
type StalledError struct {
	Node    string
	Timeout time.Duration
	// Refused lists the pods still refused, with the last refusal.
	Refused []Refusal
}

// Refusal is the last answer of the eviction API for one pod.
type Refusal struct {
	Pod     string `json:"pod"`
	PDB     string `json:"pdb,omitempty"`
	Message string `json:"message"`
}

// Error implements error.
func (e *StalledError) Error() string {
	parts := make([]string, len(e.Refused))
	for i, r := range e.Refused {
		parts[i] = fmt.Sprintf("pod %s blocked by PodDisruptionBudget %s: %s", r.Pod, orNone(r.PDB), r.Message)
		if r.PDB == "" {
			parts[i] = fmt.Sprintf("pod %s: %s", r.Pod, r.Message)
		}
	}
	return fmt.Sprintf("drain of node %s timed out after %s: %s (the node stays cordoned; run `kdiag drain check %s` for fixes)", e.Node, e.Timeout, strings.Join(parts, "; "), e.Node)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// Run drains nodes for real, in order: it cordons them all (as kubectl
// drain does), then on each node applies kubectl's filters (a refused pod
// stops the drain with an error before anything is evicted on that node),
// evicts the pods through the policy/v1 eviction API, retries refusals
// (HTTP 429) every RetryInterval, and waits until the pods are gone. Each
// eviction request is sent with client-go's own retries switched off, so
// that a 429's Retry-After cannot hold a request past the timeout. When the
// timeout passes it returns a *StalledError naming the blocking pods and
// budgets; the nodes stay cordoned.
func Run(ctx context.Context, cs kubernetes.Interface, nodes []string, o RunOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = 5 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	for _, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); err != nil {
			return nodeError(n, "get", err)
		}
	}
	for _, n := range nodes {
		step := o.Record.Step(ctx, "cordon "+n, "")
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{FieldManager: "kdiag-drain"}); err != nil {
			err = nodeError(n, "cordon (patch)", err)
			step.Done(ctx, err, "")
			return err
		}
		step.Done(ctx, nil, "")
		fmt.Fprintf(o.Out, "node/%s cordoned\n", n)
	}
	for _, n := range nodes {
		if err := drainOne(ctx, cs, n, o); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "node/%s drained\n", n)
	}
	return nil
}

// RunRecorded runs Run as one recorded Drain operation: it starts the
// record (target: the nodes, or the selector that chose them), passes it to
// Run and finishes it with Run's error and Hint(err). It returns Run's
// error; recording problems are only warnings (see ops.Recorder).
func RunRecorded(ctx context.Context, cs kubernetes.Interface, r *ops.Recorder, nodes []string, selector string, o RunOptions) error {
	target := v1alpha1.OperationTarget{Nodes: nodes, Selector: selector, Name: selector}
	if target.Name == "" {
		target.Name = strings.Join(nodes, ",")
	}
	rec, err := r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeDrain, Target: target}})
	if err != nil {
		return fmt.Errorf("record the drain: %w", err)
	}
	o.Record = rec
	err = Run(ctx, cs, nodes, o)
	return rec.Finish(ctx, err, Hint(err))
}

// Hint is the troubleshooting hint of a failed drain, for its operation
// record: the budgets that refused the evictions and the way out.
func Hint(err error) string {
	var s *StalledError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &s):
		var pdbs, terminating []string
		for _, r := range s.Refused {
			switch {
			case r.PDB != "":
				for _, p := range strings.Split(r.PDB, ",") {
					if !slices.Contains(pdbs, p) {
						pdbs = append(pdbs, p)
					}
				}
			default:
				terminating = append(terminating, r.Pod)
			}
		}
		var parts []string
		if len(pdbs) > 0 {
			parts = append(parts, fmt.Sprintf("PodDisruptionBudget %s allows no disruption: add replicas to the workload or relax the budget; `kdiag drain check %s` proposes both fixes, checked by server-side dry run", strings.Join(pdbs, ", "), s.Node))
		}
		if len(terminating) > 0 {
			parts = append(parts, fmt.Sprintf("pod(s) %s were evicted but are still terminating: look at their finalizers and terminationGracePeriodSeconds", strings.Join(terminating, ", ")))
		}
		return strings.Join(parts, "; ")
	case strings.Contains(err.Error(), "forbidden"):
		return "the account lacks rights a drain needs (patch nodes, create pods/eviction): check its RBAC with `kubectl auth can-i create pods/eviction -A`"
	case strings.Contains(err.Error(), "cannot delete"):
		return "kubectl drain's filters refused some pods: pass --ignore-daemonsets, --delete-emptydir-data or --force as kubectl drain would, after checking what they lose"
	default:
		return ""
	}
}

func nodeError(node, verb string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("node %s: %s forbidden: your account may not %s nodes: %w", node, verb, verb, err)
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %q not found", node)
	}
	return fmt.Errorf("node %s: %s: %w", node, verb, err)
}

func drainOne(ctx context.Context, cs kubernetes.Interface, node string, o RunOptions) error {
	list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return fmt.Errorf("list pods on node %s: %w", node, err)
	}
	dsLookup := func(ns, name string) (bool, bool) {
		_, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, true
		}
		return err == nil, err == nil
	}
	var refused []string
	var pods []corev1.Pod
	for _, p := range list.Items {
		if SkipWaitForDelete(&p, o.SkipWaitForDeleteTimeoutSeconds, time.Now()) {
			// kubectl's skipDeletedFilter: already deleted long enough ago.
			fmt.Fprintf(o.Out, "pod %q has DeletionTimestamp older than %d seconds, skipping\n", p.Name, o.SkipWaitForDeleteTimeoutSeconds)
			continue
		}
		d := Classify(&p, dsLookup, o.Options)
		switch d.Action {
		case Refuse:
			refused = append(refused, fmt.Sprintf("%s/%s: cannot delete %s", p.Namespace, p.Name, d.Message))
		case Skip:
			fmt.Fprintf(o.Out, "Warning: %s/%s: %s\n", p.Namespace, p.Name, d.Message)
		default:
			pods = append(pods, p)
		}
	}
	if len(refused) > 0 {
		err := fmt.Errorf("node %s: %s", node, strings.Join(refused, "; "))
		o.Record.Step(ctx, "check pods on "+node, "").Done(ctx, err, "")
		return err
	}
	last := map[string]Refusal{}
	pending := map[types.UID]corev1.Pod{}
	steps := map[types.UID]*ops.Step{}
	for _, p := range pods {
		pending[p.UID] = p
		fmt.Fprintf(o.Out, "evicting pod %s/%s\n", p.Namespace, p.Name)
		steps[p.UID] = o.Record.Step(ctx, "evict pod "+p.Namespace+"/"+p.Name, "on "+node)
	}
	// fail ends the open eviction steps when the drain stops on an error.
	fail := func(err error) error {
		for _, s := range steps {
			s.Done(ctx, err, "")
		}
		return err
	}
	evicted := map[types.UID]bool{}
	for {
		for uid, p := range pending {
			if !evicted[uid] {
				err := evict(ctx, cs, &p)
				switch {
				case err == nil, apierrors.IsNotFound(err):
					evicted[uid] = true
					delete(last, p.Namespace+"/"+p.Name)
				case apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err):
					last[p.Namespace+"/"+p.Name] = refusal(ctx, cs, &p, err)
					fmt.Fprintf(o.Progress, "error when evicting pods/%q -n %q (will retry after %s): %s\n", p.Name, p.Namespace, o.RetryInterval, oneLine(err))
				case ctx.Err() != nil:
				case apierrors.IsForbidden(err):
					return fail(fmt.Errorf("evict pod %s/%s: forbidden: your account may not create pods/eviction in namespace %s: %s", p.Namespace, p.Name, p.Namespace, oneLine(err)))
				default:
					return fail(fmt.Errorf("evict pod %s/%s: %w", p.Namespace, p.Name, err))
				}
			}
			if evicted[uid] {
				cur, gone, err := podGone(ctx, cs, &p)
				if err != nil && ctx.Err() == nil {
					return fail(err)
				}
				switch {
				case gone:
					fmt.Fprintf(o.Out, "pod/%s evicted\n", p.Name)
					delete(pending, uid)
					steps[uid].Done(ctx, nil, "evicted")
					delete(steps, uid)
				case cur != nil && SkipWaitForDelete(cur, o.SkipWaitForDeleteTimeoutSeconds, time.Now()):
					fmt.Fprintf(o.Out, "pod %q has DeletionTimestamp older than %d seconds, skipping\n", p.Name, o.SkipWaitForDeleteTimeoutSeconds)
					delete(pending, uid)
					steps[uid].Done(ctx, nil, SkippedMessage(o.SkipWaitForDeleteTimeoutSeconds))
					delete(steps, uid)
				}
			}
		}
		if len(pending) == 0 {
			return nil
		}
		wait := o.RetryInterval
		if len(last) == 0 {
			wait = time.Second // only waiting for deletions
		}
		select {
		case <-ctx.Done():
			st := stalled(node, o.Timeout, pending, last)
			for _, r := range st.Refused {
				for uid, p := range pending {
					if p.Namespace+"/"+p.Name == r.Pod {
						msg := r.Message
						if r.PDB != "" {
							msg = "blocked by PodDisruptionBudget " + r.PDB + ": " + msg
						}
						steps[uid].Done(ctx, st, msg)
					}
				}
			}
			return st
		case <-time.After(wait):
		}
	}
}

func stalled(node string, timeout time.Duration, pending map[types.UID]corev1.Pod, last map[string]Refusal) *StalledError {
	e := &StalledError{Node: node, Timeout: timeout}
	for _, p := range pending {
		ref := p.Namespace + "/" + p.Name
		r, ok := last[ref]
		if !ok {
			r = Refusal{Pod: ref, Message: TerminatingMessage}
		}
		e.Refused = append(e.Refused, r)
	}
	sort.Slice(e.Refused, func(i, j int) bool { return e.Refused[i].Pod < e.Refused[j].Pod })
	return e
}

// evict posts a policy/v1 Eviction with client-go's retries off: by default
// a 429 carrying Retry-After is retried inside the client up to 10 times,
// hiding refusals and overrunning the timeout.
func evict(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) error {
	ev := &policyv1.Eviction{
		TypeMeta:      metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
	}
	return cs.CoreV1().RESTClient().Post().MaxRetries(0).
		Namespace(p.Namespace).Resource("pods").Name(p.Name).SubResource("eviction").
		Body(ev).Do(ctx).Error()
}

// podGone reports whether the pod was deleted (or replaced by another of the
// same name, as StatefulSets do); when it is still there it returns it as
// it is now.
func podGone(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) (*corev1.Pod, bool, error) {
	cur, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("get pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	if cur.UID != p.UID {
		return nil, true, nil
	}
	return cur, false, nil
}

// refusal names the budget behind a refused eviction: the eviction API's
// message names it, and kdiag matches the namespace's budgets against the
// pod to be sure.
func refusal(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, err error) Refusal {
	r := Refusal{Pod: p.Namespace + "/" + p.Name, Message: oneLine(err)}
	list, lerr := cs.PolicyV1().PodDisruptionBudgets(p.Namespace).List(ctx, metav1.ListOptions{})
	if lerr != nil {
		return r
	}
	var names []string
	for i := range list.Items {
		if pdb.Covers(&list.Items[i], p) {
			names = append(names, p.Namespace+"/"+list.Items[i].Name)
		}
	}
	r.PDB = strings.Join(names, ",")
	return r
}

// oneLine renders an API error on one line with the causes the server
// attached: for a refused eviction the cause names the budget's numbers
// ("The disruption budget nginx needs 1 healthy pods and has 1 currently").
func oneLine(err error) string {
	msg := err.Error()
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Details != nil {
		for _, c := range st.Status().Details.Causes {
			if c.Message != "" && !strings.Contains(msg, c.Message) {
				msg += " " + c.Message
			}
		}
	}
	return strings.Join(strings.Fields(msg), " ")
}

// IsStalled reports whether err is a drain timeout.
func IsStalled(err error) bool {
	var s *StalledError
	return errors.As(err, &s)
}
