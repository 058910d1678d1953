package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/agentclient"
)

// FetchOptions say how to get a node's report.
type FetchOptions struct {
	// Stored reads the stored ConfigMap without asking the agent.
	Stored bool
	// Agents says where the agents run (agentclient defaults).
	Agents agentclient.Options
}

// Fetched is a report and where it came from.
type Fetched struct {
	Report *Report
	// Stored is true when the report is the stored one.
	Stored bool
	// Note explains a fallback to the stored report ("" otherwise).
	Note string
}

// Fetch asks node's agent for a fresh report through the API server's pod
// proxy; with opts.Stored, or when no agent answers, it reads the stored
// report and says why in Note. A missing node and RBAC denials are errors.
func Fetch(ctx context.Context, cs kubernetes.Interface, node string, opts FetchOptions) (*Fetched, error) {
	if _, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("node %q not found", node)
		case apierrors.IsForbidden(err):
			// Not fatal: the report may still be readable.
		default:
			return nil, fmt.Errorf("read node %s: %w", node, err)
		}
	}
	if opts.Stored {
		r, err := Load(ctx, cs, node)
		if err != nil {
			return nil, err
		}
		return &Fetched{Report: r, Stored: true}, nil
	}
	r, agentErr := fromAgent(ctx, cs, node, opts.Agents)
	if agentErr == nil {
		return &Fetched{Report: r}, nil
	}
	if apierrors.IsForbidden(agentErr) {
		return nil, agentErr
	}
	r, err := Load(ctx, cs, node)
	if err != nil {
		return nil, fmt.Errorf("%w; and no stored report: %w", agentErr, err)
	}
	return &Fetched{Report: r, Stored: true, Note: fmt.Sprintf("no agent answered (%v): showing the stored report of %s (%s ago, trigger: %s)",
		agentErr, r.Time.UTC().Format(time.RFC3339), time.Since(r.Time).Round(time.Second), r.Trigger)}, nil
}

// fromAgent asks the node's agent for a report.
func fromAgent(ctx context.Context, cs kubernetes.Interface, node string, o agentclient.Options) (*Report, error) {
	c := agentclient.New(cs, o)
	a, err := c.Agent(ctx, node)
	if err != nil {
		return nil, err
	}
	b, err := c.Get(ctx, a, "/diagnose", nil)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("%w (kdiag needs pods/proxy get in %s)", err, a.Pod.Namespace)
		}
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("agent %s/%s: the /diagnose answer is not a report: %w", a.Pod.Namespace, a.Pod.Name, err)
	}
	if r.Node == "" {
		return nil, errors.New("agent answered an empty report")
	}
	return &r, nil
}
