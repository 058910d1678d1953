package fix

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/analyze"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/doctor"
	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Where problems come from.
const (
	SourceDoctor = "doctor"
	SourceDrain  = "drain check"
)

// FromDoctor reads the cluster as `kdiag doctor --check id` does (one read,
// only namespace when it is set) and returns the findings of that check as
// problems, each able to recheck itself. Dry runs are left to Apply, which
// runs them at apply time.
func FromDoctor(ctx context.Context, cfg *rest.Config, source, id, namespace string) ([]Problem, error) {
	known := false
	for _, c := range analyze.Checks() {
		known = known || c.ID == id
	}
	if !known {
		return nil, fmt.Errorf("unknown check ID %q (see `kdiag checks`)", id)
	}
	read := func(ctx context.Context) ([]findings.Finding, error) {
		rep, err := doctor.Live(ctx, cfg, source, doctor.Options{Namespace: namespace, Filter: analyze.Filter{Only: []string{id}}, SkipDryRun: true})
		if err != nil {
			return nil, err
		}
		if len(rep.Findings) == 0 && len(rep.Gaps) > 0 {
			return nil, fmt.Errorf("check %s found nothing, but the read was partial: %s", id, gapList(rep.Gaps))
		}
		return rep.Findings, nil
	}
	fs, err := read(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Problem, 0, len(fs))
	for _, f := range fs {
		obj := f.Object
		out = append(out, Problem{
			Source: SourceDoctor, Check: f.ID, Title: f.Title, Object: obj, Remediation: f.Remediation,
			Recheck: func(ctx context.Context) (bool, error) {
				again, err := read(ctx)
				if err != nil {
					return false, err
				}
				for _, g := range again {
					if g.Object == obj {
						return true, nil
					}
				}
				return false, nil
			},
		})
	}
	return out, nil
}

// DrainQuery says which drain to check for blockers.
type DrainQuery struct {
	// Nodes are node names, in drain order; or Selector picks a pool.
	Nodes    []string
	Selector string
	Options  drain.Options
	// Source names the cluster (the kubeconfig context).
	Source string
}

// FromDrain runs `kdiag drain check` on the query's nodes and returns each
// blocker as a problem about its pod, able to recheck whether that pod
// still blocks the drain.
func FromDrain(ctx context.Context, cfg *rest.Config, q DrainQuery) ([]Problem, error) {
	cs, err := cluster.NewReadClient(cfg)
	if err != nil {
		return nil, err
	}
	check := func(ctx context.Context) (*drain.Report, error) {
		snap, err := cluster.ReadLive(ctx, cs, cluster.LiveOptions{Source: q.Source})
		if err != nil {
			return nil, err
		}
		if !snap.Has(cluster.ResNodes) || !snap.Has(cluster.ResPods) || !snap.Has(cluster.ResPDBs) {
			return nil, fmt.Errorf("cannot check the drain: could not read %s", gapList(snap.Gaps))
		}
		nodes, err := drain.ResolveNodes(snap.Nodes, q.Nodes, q.Selector)
		if err != nil {
			return nil, err
		}
		return drain.Check(snap, nodes, q.Options), nil
	}
	rep, err := check(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Problem, 0, len(rep.Blockers))
	for _, b := range rep.Blockers {
		ns, name, _ := strings.Cut(b.Pod, "/")
		pod := b.Pod
		title := fmt.Sprintf("the drain of %s stalls on pod %s: %s", b.Node, b.Pod, b.Message)
		out = append(out, Problem{
			Source: SourceDrain, Check: "drain/" + b.Reason, Title: title,
			Object:      findings.ObjectRef{Kind: "Pod", Namespace: ns, Name: name},
			Remediation: b.Remediation,
			Recheck: func(ctx context.Context) (bool, error) {
				again, err := check(ctx)
				if err != nil {
					return false, err
				}
				for _, b := range again.Blockers {
					if b.Pod == pod {
						return true, nil
					}
				}
				return false, nil
			},
		})
	}
	return out, nil
}

func gapList(gaps []cluster.Gap) string {
	parts := make([]string, 0, len(gaps))
	for _, g := range gaps {
		parts = append(parts, fmt.Sprintf("%v", g))
	}
	return strings.Join(parts, "; ")
}
