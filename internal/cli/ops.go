package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/ops"
)

// maxPrevious is how many earlier operations `ops last` lists under the
// newest one.
const maxPrevious = 5

type opsFlags struct {
	node   string
	typ    string
	output string
}

// newOpsCommand builds `kdiag ops list|show|last`.
func newOpsCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ops",
		Short: "Operation history and last operation status: recorded drains, repairs and fixes, plus those reconstructed from events",
		Long: `ops reads the Operation records (operations.kdiag.io) that kdiag drain run, kdiag repair
and applied fixes write, and reconstructs past operations from the cluster's events:
node repairs (NodeReboot*, NodeReimage*, NodeRedeploy*), cordons (NodeNotSchedulable,
NodeSchedulable) and refused evictions. Reconstructed operations show SOURCE events.`,
	}
	cmd.AddCommand(newOpsListCommand(g), newOpsShowCommand(g), newOpsLastCommand(g))
	return cmd
}

func (f *opsFlags) bind(cmd *cobra.Command, outputs string) {
	cmd.Flags().StringVar(&f.node, "node", "", "only operations on this node")
	cmd.Flags().StringVar(&f.typ, "type", "", "only operations of this type: Drain, Repair, Fix or Eviction")
	cmd.Flags().StringVarP(&f.output, "output", "o", "", "output format: "+outputs)
}

func newOpsListCommand(g *Globals) *cobra.Command {
	f := &opsFlags{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List operations, oldest first, as kubectl get does",
		Example: `  kdiag ops list
  kdiag ops list --node aks-np1-12345-vmss000000 -o wide
  kdiag ops list --type Repair -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch f.output {
			case "", "wide", "json", "yaml":
			default:
				return fmt.Errorf("--output=%q: want wide, json or yaml", f.output)
			}
			h, err := readHistory(cmd, g, f)
			if err != nil {
				return err
			}
			if f.output == "json" || f.output == "yaml" {
				return ops.WriteObject(g.Streams.Out, ops.AsList(h.Operations), f.output)
			}
			if len(h.Operations) == 0 {
				fmt.Fprintln(g.Streams.ErrOut, "No operations found.")
				return nil
			}
			return ops.WriteTable(g.Streams.Out, h.Operations, f.output == "wide", time.Now())
		},
	}
	f.bind(cmd, "wide|json|yaml (default: a table)")
	return cmd
}

func newOpsShowCommand(g *Globals) *cobra.Command {
	f := &opsFlags{}
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show one operation with its steps, error and hint",
		Example: `  kdiag ops show drain-lab-node-1-x7k2p`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := detailOutput(f.output); err != nil {
				return err
			}
			h, err := readHistory(cmd, g, f)
			if err != nil {
				return err
			}
			op := h.Find(args[0])
			if op == nil {
				return fmt.Errorf("operation %q not found (kdiag ops list shows the names)", args[0])
			}
			return writeDetail(g, op, f.output, nil)
		},
	}
	f.bind(cmd, "json|yaml (default: text)")
	return cmd
}

func newOpsLastCommand(g *Globals) *cobra.Command {
	f := &opsFlags{}
	cmd := &cobra.Command{
		Use:   "last",
		Short: "Last operation status: the newest operation (of a node) with its steps, error and hint, and the ones before it",
		Example: `  kdiag ops last --node aks-np1-12345-vmss000000
  kdiag ops last --type Drain -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := detailOutput(f.output); err != nil {
				return err
			}
			h, err := readHistory(cmd, g, f)
			if err != nil {
				return err
			}
			op := h.Last()
			if op == nil {
				return fmt.Errorf("no operation found%s", filterText(f))
			}
			prev := h.Operations[:len(h.Operations)-1]
			if len(prev) > maxPrevious {
				prev = prev[len(prev)-maxPrevious:]
			}
			return writeDetail(g, op, f.output, prev)
		},
	}
	f.bind(cmd, "json|yaml (default: text)")
	return cmd
}

func detailOutput(o string) error {
	switch o {
	case "", "text", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output=%q: want text, json or yaml", o)
}

func filterText(f *opsFlags) string {
	s := ""
	if f.node != "" {
		s += " on node " + f.node
	}
	if f.typ != "" {
		s += " of type " + f.typ
	}
	return s
}

func readHistory(cmd *cobra.Command, g *Globals, f *opsFlags) (*ops.History, error) {
	switch t := v1alpha1.OperationType(f.typ); t {
	case "", v1alpha1.TypeDrain, v1alpha1.TypeRepair, v1alpha1.TypeFix, v1alpha1.TypeEviction:
	default:
		return nil, fmt.Errorf("--type=%q: want Drain, Repair, Fix or Eviction", f.typ)
	}
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	h, err := ops.Read(cmd.Context(), dyn, cs, ops.Filter{Node: f.node, Type: v1alpha1.OperationType(f.typ)})
	if err != nil {
		return nil, err
	}
	for _, w := range h.Warnings {
		fmt.Fprintln(g.Streams.ErrOut, "Warning: "+w)
	}
	return h, nil
}

// writeDetail prints one operation; in text it lists prev (older
// operations) under it.
func writeDetail(g *Globals, op *v1alpha1.Operation, output string, prev []v1alpha1.Operation) error {
	if output == "json" || output == "yaml" {
		op.TypeMeta.APIVersion, op.TypeMeta.Kind = v1alpha1.GroupVersion().String(), "Operation"
		return ops.WriteObject(g.Streams.Out, op, output)
	}
	now := time.Now()
	if err := ops.WriteDetail(g.Streams.Out, op, now); err != nil {
		return err
	}
	if len(prev) == 0 {
		return nil
	}
	fmt.Fprintf(g.Streams.Out, "\nEarlier operations (newest last):\n")
	return ops.WriteTable(g.Streams.Out, prev, false, now)
}
