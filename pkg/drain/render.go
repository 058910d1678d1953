package drain

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// Write renders the report: "json" and "yaml" encode it (top-level
// blockers list), anything else is kubectl-like text.
func (rep *Report) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "yaml":
		b, err := yaml.Marshal(rep)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	fmt.Fprintf(w, "Drain of %d node(s), in this order: %s (all cordoned first, as kubectl drain does)\n", len(rep.Nodes), strings.Join(rep.Nodes, ", "))
	for _, st := range rep.Steps {
		state := "drains"
		if st.Stalled {
			state = "STALLS"
		}
		fmt.Fprintf(w, "node/%s %s\n", st.Node, state)
		for _, p := range st.Evicted {
			if n, ok := st.Replaced[p]; ok {
				fmt.Fprintf(w, "  evict %s (replacement starts on %s)\n", p, n)
			} else {
				fmt.Fprintf(w, "  evict %s (no replacement can start outside the drained nodes)\n", p)
			}
		}
		for _, s := range st.Skipped {
			fmt.Fprintf(w, "  skip %s\n", s)
		}
		for _, s := range st.Warnings {
			fmt.Fprintf(w, "  Warning: %s\n", s)
		}
	}
	for _, gp := range rep.Gaps {
		fmt.Fprintf(w, "not read (answer may be partial): %s\n", gp)
	}
	if !rep.Stalls {
		fmt.Fprintln(w, "\nThe drain would finish.")
		return nil
	}
	fmt.Fprintf(w, "\nThe drain would STALL on %d pod(s):\n", len(rep.Blockers))
	for _, b := range rep.Blockers {
		fmt.Fprintf(w, "\npod %s on node %s: %s", b.Pod, b.Node, b.Reason)
		if b.PDB != "" {
			fmt.Fprintf(w, " (PodDisruptionBudget %s)", b.PDB)
		}
		if b.Rolling {
			fmt.Fprint(w, " [passes a per-pod check; stalls only in the rolling drain]")
		}
		fmt.Fprintf(w, "\n  %s\n", b.Message)
		for _, r := range b.Remediation {
			fmt.Fprintf(w, "  fix: %s\n    $ %s\n", r.Description, r.Command)
			if r.DryRun != nil {
				line := "    server-side dry run: " + string(r.DryRun.Status)
				if r.DryRun.Reason != "" {
					line += " (" + r.DryRun.Reason + ")"
				}
				fmt.Fprintln(w, line)
			}
		}
	}
	return nil
}
