// Package doctor runs kdiag's main job: read the cluster once (live or from
// a dump), run every analyzer, verify each mutating fix by server-side dry
// run, and assemble the report.
package doctor

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/analyze"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/report"
)

// Options tunes a doctor run.
type Options struct {
	// Namespace limits namespaced resources to one namespace; "" means all.
	Namespace string
	// Filter selects checks.
	Filter analyze.Filter
	// SkipDryRun turns off the server-side verification of fixes.
	SkipDryRun bool
	// PageSize is the limit of each list call; 0 means 500.
	PageSize int64
	// Progress, if set, receives read progress.
	Progress func(r cluster.Resource, n int)
	Logger   *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Live diagnoses the cluster behind cfg. source names it in the report
// (usually the kubeconfig context).
func Live(ctx context.Context, cfg *rest.Config, source string, o Options) (*report.Report, error) {
	cs, err := cluster.NewReadClient(cfg)
	if err != nil {
		return nil, err
	}
	log := o.logger()
	snap, err := cluster.ReadLive(ctx, cs, cluster.LiveOptions{
		Source: source, Namespace: o.Namespace, PageSize: o.PageSize, Progress: o.Progress,
	})
	if err != nil {
		return nil, err
	}
	log.Info("cluster read", "nodes", len(snap.Nodes), "pods", len(snap.Pods), "gaps", len(snap.Gaps))
	fs := analyze.Run(snap, o.Filter)
	if o.SkipDryRun {
		findings.SkipDryRuns(fs, "dry runs turned off with --dry-run=none")
	} else {
		dcfg := rest.CopyConfig(cfg)
		if dcfg.QPS == 0 {
			dcfg.QPS, dcfg.Burst = 50, 100 // a few hundred dry runs at most
		}
		dc, err := dynamic.NewForConfig(dcfg)
		if err != nil {
			return nil, fmt.Errorf("build dynamic client: %w", err)
		}
		if err := (&findings.Verifier{Client: dc}).Verify(ctx, fs); err != nil {
			return nil, err
		}
	}
	return report.New(snap, fs), nil
}

// Dump diagnoses an offline dump. Dry runs are skipped: there is no API
// server to ask.
func Dump(fsys fs.FS, source string, o Options) (*report.Report, error) {
	snap, err := cluster.ReadDump(fsys, source)
	if err != nil {
		return nil, err
	}
	if o.Namespace != "" {
		snap = snap.Restrict(o.Namespace)
	}
	fs := analyze.Run(snap, o.Filter)
	findings.SkipDryRuns(fs, "offline dump: no API server to verify against")
	return report.New(snap, fs), nil
}
