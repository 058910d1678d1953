package repair

import (
	"context"
	"errors"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/ops"
)

// terminatingMessage is pkg/drain's refusal message for a pod whose
// eviction was granted but which is not deleted yet.
const terminatingMessage = drain.TerminatingMessage

// NewDrainer returns the Drainer of the controller: pkg/drain's Run on one
// node (cordon, evictions through the eviction API so PDBs are respected,
// retries, timeout), with DaemonSet pods skipped and emptyDir pods evicted:
// a reimaged or redeployed node loses both anyway.
//
// On an unhealthy node the kubelet is often down, so a pod whose eviction
// was granted never finishes terminating: no kubelet confirms it. On a
// node that is not Ready when the drain starts, the drain therefore runs
// with kubectl's --skip-wait-for-delete-timeout=skipWaitSeconds: an evicted
// pod is not waited for once its deletionTimestamp (eviction time plus its
// grace period) is older than that, and the drain ends long before its
// timeout. skipWaitSeconds <= 0 waits for every pod. As a fallback (the
// option off, or a grace period longer than the timeout), a drain that
// timed out with only such evicted pods left still counts as done: every
// budget allowed its eviction, and the reimage or redeploy removes the
// pods. A drain stopped by a budget always fails.
//
// record, if not nil, returns the node's open Operation record, which then
// gets the drain's own steps (the cordon, one per evicted pod).
func NewDrainer(cs kubernetes.Interface, timeout time.Duration, skipWaitSeconds int, log *slog.Logger, record func(node string) *ops.Record) Drainer {
	return func(ctx context.Context, node string) error {
		o := drain.RunOptions{
			Options: drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true},
			Timeout: timeout,
		}
		if skipWaitSeconds > 0 {
			// Only on a node that is not Ready: a live kubelet finishes
			// the deletions, and they are waited for as kubectl does.
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil || !HealthOf(n).Ready {
				o.SkipWaitForDeleteTimeoutSeconds = skipWaitSeconds
			}
		}
		if record != nil {
			o.Record = record(node)
		}
		err := drain.Run(ctx, cs, []string{node}, o)
		if onlyTerminating(err) {
			log.Info("drain: evicted pods still terminating on the unhealthy node (its kubelet does not confirm); going on", "node", node, "drain", err)
			return nil
		}
		return err
	}
}

// onlyTerminating reports whether err is a drain timeout in which every
// pod left was evicted and is only waiting for its deletion.
func onlyTerminating(err error) bool {
	var s *drain.StalledError
	if !errors.As(err, &s) || len(s.Refused) == 0 {
		return false
	}
	for _, r := range s.Refused {
		if r.PDB != "" || r.Message != terminatingMessage {
			return false
		}
	}
	return true
}
