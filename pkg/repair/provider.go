package repair

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Provider performs repair actions on nodes: the bridge to a cloud, Cluster
// API, bare metal or the lab. Do returns when the action was carried out
// (not when the node is Ready: the controller waits for that), with
// whatever the provider printed or did, for the event and the Operation.
type Provider interface {
	// Name identifies the provider in logs, events and records.
	Name() string
	// Do performs action a on node n.
	Do(ctx context.Context, n *corev1.Node, a Action) (output string, err error)
}

// maxOutput bounds what is kept of a provider's output: an Event's message
// holds at most 1 KiB.
const maxOutput = 512

// clip keeps the last maxOutput bytes of s (the end of a command's output
// says how it ended), on one line.
func clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxOutput {
		s = "..." + s[len(s)-maxOutput:]
	}
	return s
}

// ProviderConfig selects and configures a provider (the CLI's flags).
type ProviderConfig struct {
	// Name is exec, clusterapi or lab.
	Name string
	// ExecCommand is the exec provider's command.
	ExecCommand []string
	// LabHealsAt is the lab provider's first action that heals a node.
	LabHealsAt Action
}

// ProviderNames lists the providers NewProvider knows.
func ProviderNames() []string { return []string{"exec", "clusterapi", "lab"} }

// Validate checks pc without contacting the cluster.
func (pc ProviderConfig) Validate() error {
	switch pc.Name {
	case "exec":
		if len(pc.ExecCommand) == 0 || strings.TrimSpace(pc.ExecCommand[0]) == "" {
			return errors.New("provider exec needs --exec-command")
		}
	case "clusterapi":
	case "lab":
		switch pc.LabHealsAt {
		case "", Reboot, Reimage, Redeploy:
		default:
			return fmt.Errorf("--lab-heals-at %q: want reboot, reimage or redeploy", pc.LabHealsAt)
		}
	case "":
		return fmt.Errorf("no --provider: choose one of %s", strings.Join(ProviderNames(), ", "))
	default:
		return fmt.Errorf("unknown provider %q: choose one of %s", pc.Name, strings.Join(ProviderNames(), ", "))
	}
	return nil
}

// NewProvider builds the provider named in pc, with clients for cfg.
func NewProvider(cfg *rest.Config, pc ProviderConfig) (Provider, error) {
	if err := pc.Validate(); err != nil {
		return nil, err
	}
	switch pc.Name {
	case "exec":
		return ExecProvider{Command: pc.ExecCommand}, nil
	case "clusterapi":
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("provider clusterapi: dynamic client: %w", err)
		}
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("provider clusterapi: discovery client: %w", err)
		}
		// The deferred mapper discovers Machine's served version on first
		// use; Do resets it after a miss, so Cluster API may be installed
		// after the controller started.
		mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
		return ClusterAPIProvider{Client: dyn, Mapper: mapper}, nil
	default: // lab
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("provider lab: client: %w", err)
		}
		return LabProvider{Client: cs, HealsAt: pc.LabHealsAt}, nil
	}
}
