package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

// Source returns "events" for a reconstructed operation, "record" for one
// read from an Operation object.
func Source(op *v1alpha1.Operation) string {
	if op.Annotations[v1alpha1.AnnotationSource] == SourceEvents {
		return SourceEvents
	}
	return "record"
}

// WriteTable prints operations as `kubectl get` does; wide adds the
// steps, the initiator and the hint. Ages are relative to now.
func WriteTable(w io.Writer, ops []v1alpha1.Operation, wide bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := "NAME\tTYPE\tTARGET\tPHASE\tSTARTED\tDURATION\tSOURCE"
	if wide {
		head += "\tSTEPS\tINITIATOR\tHINT"
	}
	fmt.Fprintln(tw, head)
	for i := range ops {
		op := &ops[i]
		row := []string{op.Name, string(op.Spec.Type), op.Spec.Target.Name, orDash(string(op.Status.Phase)),
			age(op.Status.StartTime, now), took(op, now), Source(op)}
		if wide {
			row = append(row, fmt.Sprint(len(op.Status.Steps)), orDash(op.Spec.Initiator), orDash(op.Status.Hint))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// WriteDetail prints one operation with its steps, error and hint, as
// `kubectl describe` does.
func WriteDetail(w io.Writer, op *v1alpha1.Operation, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	target := op.Spec.Target.Name
	if n := op.Spec.Target.Nodes; len(n) > 0 && strings.Join(n, ",") != target {
		target += " (nodes " + strings.Join(n, ", ") + ")"
	}
	if o := op.Spec.Target.Object; o != nil && !strings.Contains(target, o.Name) {
		target += fmt.Sprintf(" (%s %s/%s)", o.Kind, o.Namespace, o.Name)
	}
	fmt.Fprintf(tw, "Name:\t%s\n", op.Name)
	fmt.Fprintf(tw, "Type:\t%s\n", op.Spec.Type)
	fmt.Fprintf(tw, "Target:\t%s\n", target)
	fmt.Fprintf(tw, "Source:\t%s\n", Source(op))
	fmt.Fprintf(tw, "Initiator:\t%s\n", orDash(op.Spec.Initiator))
	if op.Spec.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", op.Spec.Reason)
	}
	fmt.Fprintf(tw, "Phase:\t%s\n", orDash(string(op.Status.Phase)))
	fmt.Fprintf(tw, "Started:\t%s\n", stamp(op.Status.StartTime, now))
	if op.Status.EndTime != nil {
		fmt.Fprintf(tw, "Ended:\t%s (%s, took %s)\n", op.Status.EndTime.UTC().Format(time.RFC3339), age(op.Status.EndTime, now), took(op, now))
	}
	if op.Status.Error != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", op.Status.Error)
	}
	if op.Status.Hint != "" {
		fmt.Fprintf(tw, "Hint:\t%s\n", op.Status.Hint)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(op.Status.Steps) == 0 {
		_, err := fmt.Fprintln(w, "Steps:      <none>")
		return err
	}
	fmt.Fprintln(w, "Steps:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tSTEP\tPHASE\tSTARTED\tTOOK\tMESSAGE")
	for i, s := range op.Status.Steps {
		d := "-"
		if s.StartTime != nil && s.EndTime != nil {
			d = duration.HumanDuration(s.EndTime.Sub(s.StartTime.Time))
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", i+1, s.Name, s.Phase, age(s.StartTime, now), d, orDash(s.Message))
	}
	return tw.Flush()
}

// WriteObject prints v (an Operation or an OperationList) as json or yaml.
func WriteObject(w io.Writer, v any, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	default:
		return fmt.Errorf("output format %q: want json or yaml", format)
	}
}

// AsList wraps operations in an OperationList, as `kubectl get -o json`.
func AsList(ops []v1alpha1.Operation) *v1alpha1.OperationList {
	l := &v1alpha1.OperationList{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion().String(), Kind: "OperationList"}, Items: ops}
	if l.Items == nil {
		l.Items = []v1alpha1.Operation{}
	}
	for i := range l.Items {
		l.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion().String(), Kind: "Operation"}
	}
	return l
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t.Time)) + " ago"
}

func stamp(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339) + " (" + age(t, now) + ")"
}

// took is the operation's duration, or how long it has been running.
func took(op *v1alpha1.Operation, now time.Time) string {
	s := op.Status.StartTime
	if s == nil {
		return "-"
	}
	if e := op.Status.EndTime; e != nil {
		return duration.HumanDuration(e.Sub(s.Time))
	}
	if op.Status.Phase == v1alpha1.PhaseRunning && Source(op) == "record" {
		return duration.HumanDuration(now.Sub(s.Time)) + " (running)"
	}
	return "-"
}
