package findings

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// Verifier checks mutating remediations with a server-side dry run: the API
// server runs admission, validation and defaulting on the request and
// persists nothing. It never changes the cluster.
type Verifier struct {
	Client dynamic.Interface
	// Parallel is how many dry runs are in flight at once; 0 means 4.
	Parallel int
}

// Verify sends every mutating remediation of every finding as a PATCH with
// dryRun=All and records the outcome on the remediation. It fails only when
// ctx is cancelled; a rejected patch is a "failed" result with the server's
// reason.
func (v *Verifier) Verify(ctx context.Context, fs []Finding) error {
	n := v.Parallel
	if n <= 0 {
		n = 4
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(n)
	for i := range fs {
		for j := range fs[i].Remediation {
			r := &fs[i].Remediation[j]
			if r.Action == nil {
				continue
			}
			g.Go(func() error {
				r.DryRun = v.dryRun(gctx, r.Action)
				return nil
			})
		}
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dry-run verification: %w", err)
	}
	return nil
}

func (v *Verifier) dryRun(ctx context.Context, a *Action) *DryRun {
	var sub []string
	if a.Subresource != "" {
		sub = []string{a.Subresource}
	}
	ri := v.Client.Resource(a.GVR())
	var err error
	opts := metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "kdiag-doctor"}
	if a.Namespace != "" {
		_, err = ri.Namespace(a.Namespace).Patch(ctx, a.Name, a.PatchType, a.Patch, opts, sub...)
	} else {
		_, err = ri.Patch(ctx, a.Name, a.PatchType, a.Patch, opts, sub...)
	}
	if err == nil {
		return &DryRun{Status: DryRunPassed}
	}
	if ctx.Err() != nil {
		return &DryRun{Status: DryRunSkipped, Reason: "cancelled before the dry run finished"}
	}
	reason := strings.Join(strings.Fields(err.Error()), " ")
	if apierrors.IsForbidden(err) {
		reason = "forbidden: you may not patch " + a.Resource + " (the fix needs more rights than this account has): " + reason
	}
	return &DryRun{Status: DryRunFailed, Reason: reason}
}

// SkipDryRuns marks every mutating remediation as skipped with the reason,
// e.g. for an offline dump or when --dry-run=none was asked for.
func SkipDryRuns(fs []Finding, reason string) {
	for i := range fs {
		for j := range fs[i].Remediation {
			if fs[i].Remediation[j].Action != nil {
				fs[i].Remediation[j].DryRun = &DryRun{Status: DryRunSkipped, Reason: reason}
			}
		}
	}
}
