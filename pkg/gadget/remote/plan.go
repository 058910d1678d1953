// Package remote is the cluster mode of kdiag trace: it decides which
// nodes to trace, streams the gadget from each node's agent through the
// API server's pod proxy (package agentclient), merges the streams into
// one, and reports per node whether it answered, had no agent or failed,
// and how many events it lost.
package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/kdiag/kdiag/pkg/enrich"
)

// PlanInput is what the command line says about where to trace.
type PlanInput struct {
	// LocalNodes are the nodes whose pods run in this machine's kernel:
	// the node this process runs on, or, on a machine hosting several
	// nodes (the lab), all of them. Empty when unknown.
	LocalNodes []string
	// Nodes are the --node values.
	Nodes []string
	// AllNodes is --all-nodes.
	AllNodes bool
	// Local is --local: trace this machine's kernel only.
	Local bool
	// Filter is the pod filter (-n, -p, -c, -l); its Node is ignored.
	Filter enrich.Filter
}

// Plan says whether to trace locally or through the agents, and where.
type Plan struct {
	// Cluster is set for cluster mode.
	Cluster bool
	// Nodes are the nodes to trace in cluster mode. Empty with Cluster
	// means every node that has an agent (the nodes could not be listed).
	Nodes []string
	// Reason explains the choice, for the user.
	Reason string
}

// Decide applies the rules of docs/commands/trace.md:
//
//  1. --local traces this machine.
//  2. --all-nodes traces every node of the cluster.
//  3. --node traces the nodes named; naming only local nodes is local mode.
//  4. A pod filter (-n, -p, -l, -c) traces the nodes where the matching
//     pods run; when they all run on this node, that is local mode.
//  5. Anything else is local mode.
//
// cs may be nil (no kubeconfig): rules 2 and 3 then fail, rule 4 falls
// back to local mode (which reports that filters need the API server).
func Decide(ctx context.Context, cs kubernetes.Interface, in PlanInput) (Plan, error) {
	in.Filter.Node = ""
	switch {
	case in.Local:
		if in.AllNodes || (len(in.Nodes) > 0 && !onlyLocal(in)) {
			return Plan{}, errors.New("--local traces only this machine: it cannot be combined with --all-nodes or --node naming another node")
		}
		return Plan{Reason: "--local"}, nil
	case in.AllNodes && len(in.Nodes) > 0:
		return Plan{}, errors.New("--all-nodes and --node exclude each other")
	case in.AllNodes:
		if cs == nil {
			return Plan{}, errors.New("--all-nodes needs the API server: no kubeconfig")
		}
		nodes, err := ListNodes(ctx, cs)
		if err != nil {
			if apierrors.IsForbidden(err) {
				return Plan{Cluster: true, Reason: "--all-nodes (nodes cannot be listed: every node with an agent)"}, nil
			}
			return Plan{}, err
		}
		return Plan{Cluster: true, Nodes: nodes, Reason: "--all-nodes"}, nil
	case len(in.Nodes) > 0:
		if onlyLocal(in) {
			return Plan{Reason: "--node " + strings.Join(in.Nodes, ",") + ": hosted on this machine"}, nil
		}
		if cs == nil {
			return Plan{}, fmt.Errorf("--node %s: local tracing sees only the nodes hosted on this machine (%s), and tracing another node through its agent needs the API server: no kubeconfig, or --no-k8s", strings.Join(in.Nodes, ","), describeLocal(in.LocalNodes))
		}
		nodes := slices.Clone(in.Nodes)
		slices.Sort(nodes)
		return Plan{Cluster: true, Nodes: slices.Compact(nodes), Reason: "--node"}, nil
	case !in.Filter.Empty() && cs != nil:
		nodes, n, err := PodNodes(ctx, cs, in.Filter)
		if err != nil {
			// Local mode reports what the filter needs.
			return Plan{Reason: fmt.Sprintf("pods could not be listed (%v)", err)}, nil
		}
		if n == 0 {
			return Plan{}, fmt.Errorf("%s in the cluster: %w", in.Filter, enrich.ErrNoMatch)
		}
		if len(nodes) == 0 {
			return Plan{}, fmt.Errorf("%s: %d pods match, none is scheduled on a node yet", in.Filter, n)
		}
		if allLocal(nodes, in.LocalNodes) {
			return Plan{Reason: fmt.Sprintf("the %d pods matching %s run on this machine", n, in.Filter)}, nil
		}
		return Plan{Cluster: true, Nodes: nodes, Reason: fmt.Sprintf("%d pods match %s", n, in.Filter)}, nil
	}
	return Plan{Reason: "no --node, --all-nodes or pod filter"}, nil
}

func onlyLocal(in PlanInput) bool { return allLocal(in.Nodes, in.LocalNodes) }

// allLocal says whether every one of nodes (at least one) is local.
func allLocal(nodes, local []string) bool {
	if len(nodes) == 0 {
		return false
	}
	for _, n := range nodes {
		if !slices.Contains(local, n) {
			return false
		}
	}
	return true
}

// describeLocal names the local nodes for an error message.
func describeLocal(local []string) string {
	if len(local) == 0 {
		return "unknown: set NODE_NAME"
	}
	return strings.Join(local, ", ")
}

// ListNodes returns the names of the cluster's nodes, sorted.
func ListNodes(ctx context.Context, cs kubernetes.Interface) ([]string, error) {
	var names []string
	p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().Nodes().List(ctx, opts)
	})
	err := p.EachListItem(ctx, metav1.ListOptions{}, func(o runtime.Object) error {
		if n, ok := o.(*corev1.Node); ok {
			names = append(names, n.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// PodNodes lists the pods that f selects (namespace and labels on the
// server, name prefix and container here) and returns the nodes they are
// scheduled on, sorted, and how many pods matched.
func PodNodes(ctx context.Context, cs kubernetes.Interface, f enrich.Filter) (nodes []string, matched int, err error) {
	lo := metav1.ListOptions{}
	if f.Selector != nil && !f.Selector.Empty() {
		lo.LabelSelector = f.Selector.String()
	}
	p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().Pods(f.Namespace).List(ctx, opts)
	})
	seen := map[string]bool{}
	err = p.EachListItem(ctx, lo, func(o runtime.Object) error {
		pod, ok := o.(*corev1.Pod)
		if !ok || !f.MatchPod(pod) || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil
		}
		matched++
		if pod.Spec.NodeName != "" && !seen[pod.Spec.NodeName] {
			seen[pod.Spec.NodeName] = true
			nodes = append(nodes, pod.Spec.NodeName)
		}
		return nil
	})
	if err != nil {
		where := "all namespaces"
		if f.Namespace != "" {
			where = "namespace " + f.Namespace
		}
		return nil, 0, fmt.Errorf("list pods in %s: %w", where, err)
	}
	slices.Sort(nodes)
	return nodes, matched, nil
}
