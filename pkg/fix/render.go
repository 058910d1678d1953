package fix

import (
	"fmt"
	"io"
	"strings"

	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/ops"
)

// WritePlan prints what the fix is and what it changes: the problem, the
// command, the PATCH request, the fields the dry run changed and the
// dry-run result.
func WritePlan(w io.Writer, r *Result) error {
	act := r.Fix.Action
	var b strings.Builder
	fmt.Fprintf(&b, "Problem:   %s on %s (%s)\n", r.Check, r.Object, r.Source)
	fmt.Fprintf(&b, "           %s\n", r.Title)
	fmt.Fprintf(&b, "Fix %d:     %s\n", r.Number, r.Fix.Description)
	fmt.Fprintf(&b, "Command:   %s\n", r.Fix.Command)
	req := "PATCH " + r.Target
	if act.Subresource != "" {
		req += " (subresource " + act.Subresource + ")"
	}
	fmt.Fprintf(&b, "Request:   %s --type=%s\n", req, patchTypeName(act.PatchType))
	fmt.Fprintf(&b, "Patch:     %s\n", PatchText(act))
	switch {
	case len(r.Diff) > 0:
		b.WriteString("Changes:\n")
		for _, c := range r.Diff {
			fmt.Fprintf(&b, "  %s: %s -> %s\n", c.Path, orNone(c.Before), orNone(c.After))
		}
	case r.DiffNote != "":
		fmt.Fprintf(&b, "Changes:   unknown (%s)\n", r.DiffNote)
	case r.DryRun.Status == findings.DryRunPassed:
		b.WriteString("Changes:   none (the object already has these values)\n")
	}
	dr := "Dry run:   " + string(r.DryRun.Status) + " (server)"
	if r.DryRun.Reason != "" {
		dr += ": " + r.DryRun.Reason
	}
	b.WriteString(dr + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteOutcome prints what happened after the plan: applied or not, the
// Operation record and the recheck.
func WriteOutcome(w io.Writer, r *Result) error {
	var b strings.Builder
	switch {
	case r.Applied:
		fmt.Fprintf(&b, "Applied:   %s patched (field manager %s)\n", r.Target, FieldManager)
	case r.Error != "":
		fmt.Fprintf(&b, "Not applied: %s\n", r.Error)
	default:
		b.WriteString("Not applied: server-side dry run only (--dry-run=server)\n")
	}
	if r.Operation != "" {
		fmt.Fprintf(&b, "Recorded:  operation %s (kdiag ops show %s)\n", r.Operation, r.Operation)
	}
	if c := r.Recheck; c != nil {
		prefix := ""
		if !c.Gone {
			prefix = "FAILED: "
		}
		fmt.Fprintf(&b, "Recheck:   %s%s\n", prefix, c.Message)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Write prints the result as text (plan and outcome), json or yaml.
func Write(w io.Writer, r *Result, format string) error {
	switch format {
	case "", "text":
		if err := WritePlan(w, r); err != nil {
			return err
		}
		return WriteOutcome(w, r)
	case "json", "yaml":
		return ops.WriteObject(w, r, format)
	}
	return fmt.Errorf("output format %q: want text, json or yaml", format)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
