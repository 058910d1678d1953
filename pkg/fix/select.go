// Package fix applies a fix that kdiag proposed (a mutating remediation of a
// doctor finding or of a drain check blocker) safely and on the record: it
// re-verifies the PATCH by server-side dry run at apply time, refuses when
// the server does, shows what will change, applies the same request for
// real with field manager "kdiag", records an Operation of type Fix, and
// can wait until the check no longer reports the problem.
package fix

import (
	"context"
	"fmt"
	"strings"

	"github.com/kdiag/kdiag/pkg/findings"
)

// Problem is one finding (or drain blocker) with its remediations, read
// fresh from the cluster.
type Problem struct {
	// Source is "doctor" or "drain check".
	Source string `json:"source"`
	// Check is the finding's check ID, or "drain/<reason>" for a blocker.
	Check string `json:"check"`
	// Title says what is wrong, in one line.
	Title string `json:"title"`
	// Object is what the finding concerns (the blocked pod for a drain).
	Object findings.ObjectRef `json:"object"`
	// Remediation lists every remediation, read-only ones included.
	Remediation []findings.Remediation `json:"remediation"`
	// Recheck, if set, runs the check again (for --wait).
	Recheck Recheck `json:"-"`
}

// Recheck runs the check that reported a problem again and says whether the
// problem is still reported.
type Recheck func(ctx context.Context) (present bool, err error)

// Mutating returns the remediations that kdiag can apply, in order; their
// 1-based positions are the --remediation numbers.
func (p *Problem) Mutating() []findings.Remediation {
	var out []findings.Remediation
	for _, r := range p.Remediation {
		if r.Mutating() {
			out = append(out, r)
		}
	}
	return out
}

// Candidate is the one fix chosen to apply.
type Candidate struct {
	Problem
	// Number is the position of the fix among the problem's mutating
	// remediations, from 1.
	Number int `json:"number"`
	// Fix is the chosen remediation; Fix.Action is the PATCH.
	Fix findings.Remediation `json:"fix"`
}

// Query says which fix to pick among problems.
type Query struct {
	// Object selects the problem's object: "kind/name", "kind/namespace/name"
	// or "namespace/kind/name" (as doctor prints it). Kinds match
	// case-insensitively, in singular, plural or kubectl's short names.
	// Empty matches every object.
	Object string
	// Namespace, if set, restricts "kind/name" objects to it.
	Namespace string
	// Number picks the Nth mutating remediation (from 1); 0 means the only one.
	Number int
	// Hint is the command that lists the problems again with a selection,
	// e.g. "kdiag fix service-target-port-mismatch"; used in the listing of
	// an ambiguous choice.
	Hint string
}

// AmbiguousError says that the query matches several fixes; Choices are the
// commands that select each one.
type AmbiguousError struct {
	What    string
	Choices []string
}

// Error implements error.
func (e *AmbiguousError) Error() string {
	return e.What + "; pick one:\n  " + strings.Join(e.Choices, "\n  ")
}

// Select picks the fix the query names among problems. It fails with an
// *AmbiguousError listing the choices when several problems or several
// fixes match, and with a one-line error when none does or the problem has
// no fix kdiag can apply.
func Select(problems []Problem, q Query) (Candidate, error) {
	var matched []Problem
	for _, p := range problems {
		if q.Object == "" || matchObject(q.Object, q.Namespace, p.Object) {
			matched = append(matched, p)
		}
	}
	if len(matched) == 0 {
		if len(problems) == 0 {
			where := ""
			if q.Namespace != "" {
				where = " in namespace " + q.Namespace
			}
			return Candidate{}, fmt.Errorf("nothing to fix: the check reports no problem%s now", where)
		}
		var objs []string
		for _, p := range problems {
			objs = append(objs, p.Object.String())
		}
		return Candidate{}, fmt.Errorf("no problem reported for %q; reported: %s", q.Object, strings.Join(objs, ", "))
	}
	var fixable []Problem
	for _, p := range matched {
		if len(p.Mutating()) > 0 {
			fixable = append(fixable, p)
		}
	}
	if len(fixable) == 0 {
		p := matched[0]
		return Candidate{}, fmt.Errorf("%s on %s has no fix kdiag can apply, only commands to look closer (see kdiag doctor or kdiag drain check)", p.Check, p.Object)
	}
	if len(fixable) > 1 {
		e := &AmbiguousError{What: fmt.Sprintf("%d problems match", len(fixable))}
		for _, p := range fixable {
			e.Choices = append(e.Choices, choices(p, q.Hint)...)
		}
		return Candidate{}, e
	}
	p := fixable[0]
	fixes := p.Mutating()
	switch {
	case q.Number == 0 && len(fixes) > 1:
		return Candidate{}, &AmbiguousError{What: fmt.Sprintf("%s on %s has %d fixes", p.Check, p.Object, len(fixes)), Choices: choices(p, q.Hint)}
	case q.Number == 0:
		return Candidate{Problem: p, Number: 1, Fix: fixes[0]}, nil
	case q.Number < 0 || q.Number > len(fixes):
		return Candidate{}, fmt.Errorf("--remediation %d: %s on %s has fixes 1 to %d", q.Number, p.Check, p.Object, len(fixes))
	}
	return Candidate{Problem: p, Number: q.Number, Fix: fixes[q.Number-1]}, nil
}

// choices lists the commands that select each fix of p.
func choices(p Problem, hint string) []string {
	var out []string
	for i, r := range p.Mutating() {
		cmd := fmt.Sprintf("%s %s --remediation %d", hint, objectArg(p), i+1)
		out = append(out, fmt.Sprintf("%s\n      %s\n      $ %s", strings.TrimSpace(cmd), firstSentence(r.Description), r.Command))
	}
	return out
}

// firstSentence shortens a fix's description for a listing.
func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i > 0 {
		return s[:i+1]
	}
	return s
}

// objectArg is how a command line names p's object: a doctor finding's
// object as kind/namespace/name, a drain blocker's pod with --pod.
func objectArg(p Problem) string {
	o := p.Object
	if p.Source == SourceDrain {
		return "--pod " + o.Namespace + "/" + o.Name
	}
	k := strings.ToLower(o.Kind)
	if o.Namespace == "" {
		return k + "/" + o.Name
	}
	return k + "/" + o.Namespace + "/" + o.Name
}

// kindAliases maps kubectl's short names to kinds. Hand-written: a
// RESTMapper would need a discovery round trip for a handful of names.
var kindAliases = map[string]string{
	"svc": "service", "deploy": "deployment", "pdb": "poddisruptionbudget",
	"po": "pod", "no": "node", "sts": "statefulset", "ds": "daemonset",
	"rs": "replicaset", "cm": "configmap", "ns": "namespace", "ep": "endpoints",
	"rc": "replicationcontroller",
}

// sameKind compares a user's kind (any case, singular, plural or short
// name) with an ObjectRef kind.
func sameKind(user, kind string) bool {
	u := strings.ToLower(user)
	if a, ok := kindAliases[u]; ok {
		u = a
	}
	k := strings.ToLower(kind)
	return u == k || u == k+"s" || u == k+"es"
}

// matchObject reports whether the user's object reference names o.
func matchObject(s, namespace string, o findings.ObjectRef) bool {
	parts := strings.Split(s, "/")
	switch len(parts) {
	case 1:
		return parts[0] == o.Name && (namespace == "" || namespace == o.Namespace)
	case 2:
		return sameKind(parts[0], o.Kind) && parts[1] == o.Name && (namespace == "" || namespace == o.Namespace)
	case 3:
		return parts[2] == o.Name &&
			((sameKind(parts[0], o.Kind) && parts[1] == o.Namespace) ||
				(parts[0] == o.Namespace && sameKind(parts[1], o.Kind)))
	}
	return false
}
