package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kdiag/kdiag/pkg/findings"
)

// Formats lists the output formats Render accepts, as for kubectl -o.
func Formats() []string { return []string{"text", "json", "yaml", "markdown"} }

// TextOptions tunes the text renderer.
type TextOptions struct {
	// Color adds ANSI colours; callers set it only for a terminal.
	Color bool
}

// Render writes the report in the given format.
func Render(w io.Writer, r *Report, format string, topts TextOptions) error {
	switch format {
	case "", "text":
		return Text(w, r, topts)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write JSON report: %w", err)
		}
		return nil
	case "yaml":
		data, err := yaml.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode YAML report: %w", err)
		}
		_, err = w.Write(data)
		return err
	case "markdown", "md":
		return Markdown(w, r)
	}
	return fmt.Errorf("unknown output format %q: want one of %s", format, strings.Join(Formats(), ", "))
}

type palette struct{ on bool }

func (p palette) wrap(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p palette) severity(s findings.Severity) string {
	label := strings.ToUpper(string(s))
	switch s {
	case findings.Critical:
		return p.wrap("1;31", label)
	case findings.Warning:
		return p.wrap("33", label)
	default:
		return p.wrap("36", label)
	}
}

func (p palette) bold(s string) string { return p.wrap("1", s) }
func (p palette) dim(s string) string  { return p.wrap("2", s) }

func dryRunLabel(p palette, d *findings.DryRun) string {
	if d == nil {
		return ""
	}
	switch d.Status {
	case findings.DryRunPassed:
		return p.wrap("32", "[dry-run passed]")
	case findings.DryRunFailed:
		return p.wrap("31", "[dry-run FAILED: "+d.Reason+"]")
	default:
		return p.dim("[dry-run skipped: " + d.Reason + "]")
	}
}

// Text writes the report for people: findings grouped by area, each with
// evidence, explanation and remediation, then a summary and what was not read.
func Text(w io.Writer, r *Report, o TextOptions) error {
	p := palette{on: o.Color}
	b := &strings.Builder{}
	fmt.Fprintf(b, "%s %s · %s · %d nodes, %d pods\n", p.bold("kdiag doctor"), r.Source,
		r.TakenAt.UTC().Format("2006-01-02 15:04:05Z"), r.Read["nodes"], r.Read["pods"])
	for _, area := range findings.Areas() {
		var fs []findings.Finding
		for _, f := range r.Findings {
			if f.Area == area {
				fs = append(fs, f)
			}
		}
		fmt.Fprintf(b, "\n%s", p.bold(strings.ToUpper(string(area))))
		if len(fs) == 0 {
			fmt.Fprintf(b, "  %s\n", p.dim("no findings"))
			continue
		}
		b.WriteString("\n")
		for _, f := range fs {
			fmt.Fprintf(b, "\n  %-8s %s  %s\n", p.severity(f.Severity), p.bold(f.Title), p.dim("["+f.ID+"]"))
			fmt.Fprintf(b, "           object: %s\n", f.Object)
			for _, e := range f.Evidence {
				fmt.Fprintf(b, "           - %s\n", e)
			}
			if f.Explanation != "" {
				fmt.Fprintf(b, "           why: %s\n", f.Explanation)
			}
			for _, rm := range f.Remediation {
				fmt.Fprintf(b, "           %s %s\n", p.dim("#"), rm.Description)
				line := "             $ " + rm.Command
				if lbl := dryRunLabel(p, rm.DryRun); lbl != "" {
					line += "  " + lbl
				}
				b.WriteString(line + "\n")
			}
		}
	}
	fmt.Fprintf(b, "\n%s %d critical, %d warning, %d info\n", p.bold("SUMMARY"), r.Summary.Critical, r.Summary.Warning, r.Summary.Info)
	if len(r.Gaps) > 0 {
		fmt.Fprintf(b, "%s checks that need these were limited:\n", p.wrap("33", "NOT READ"))
		for _, g := range r.Gaps {
			fmt.Fprintf(b, "  - %s\n", g)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Markdown writes the report for pasting into a ticket.
func Markdown(w io.Writer, r *Report) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, "# kdiag doctor report\n\n- Source: `%s`\n- Taken at: %s\n- Summary: **%d critical**, %d warning, %d info\n",
		r.Source, r.TakenAt.UTC().Format("2006-01-02 15:04:05Z"), r.Summary.Critical, r.Summary.Warning, r.Summary.Info)
	for _, area := range findings.Areas() {
		var fs []findings.Finding
		for _, f := range r.Findings {
			if f.Area == area {
				fs = append(fs, f)
			}
		}
		if len(fs) == 0 {
			continue
		}
		fmt.Fprintf(b, "\n## %s\n", strings.ToUpper(string(area[:1]))+string(area[1:]))
		for _, f := range fs {
			fmt.Fprintf(b, "\n### %s: %s\n\n`%s` · %s · check [`%s`](docs/checks/%s.md)\n\n", strings.ToUpper(string(f.Severity)), mdEscape(f.Title), f.Object, f.Area, f.ID, f.ID)
			if len(f.Evidence) > 0 {
				b.WriteString("**Evidence**\n\n")
				for _, e := range f.Evidence {
					fmt.Fprintf(b, "- %s\n", mdEscape(e))
				}
				b.WriteString("\n")
			}
			if f.Explanation != "" {
				fmt.Fprintf(b, "**Why:** %s\n\n", mdEscape(f.Explanation))
			}
			if len(f.Remediation) > 0 {
				b.WriteString("**Remediation**\n\n")
				for _, rm := range f.Remediation {
					fmt.Fprintf(b, "- %s", mdEscape(rm.Description))
					if rm.DryRun != nil {
						fmt.Fprintf(b, " (dry-run: %s", rm.DryRun.Status)
						if rm.DryRun.Reason != "" {
							fmt.Fprintf(b, ": %s", mdEscape(rm.DryRun.Reason))
						}
						b.WriteString(")")
					}
					fmt.Fprintf(b, "\n  ```sh\n  %s\n  ```\n", rm.Command)
				}
			}
		}
	}
	if len(r.Gaps) > 0 {
		b.WriteString("\n## Not read\n\n")
		for _, g := range r.Gaps {
			fmt.Fprintf(b, "- %s\n", mdEscape(g.String()))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdEscape keeps user-controlled strings (messages, names) from breaking the
// Markdown structure. Hand-written: only a handful of characters matter here.
func mdEscape(s string) string {
	r := strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "`", "'", "*", `\*`, "_", `\_`)
	return r.Replace(s)
}
