package fix

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
)

// ignoredPaths are fields every write changes, which say nothing about
// what the fix does.
var ignoredPaths = map[string]bool{
	"metadata.managedFields":   true,
	"metadata.resourceVersion": true,
	"metadata.generation":      true,
}

// Diff lists the leaf fields that differ between two objects (as the
// server returned them), by path such as spec.ports[0].targetPort, sorted.
// Hand-written: the user needs the changed fields of one object, not a
// text diff of two YAML documents, and this is a short walk.
func Diff(before, after map[string]any) []Change {
	b, a := map[string]string{}, map[string]string{}
	flatten("", before, b)
	flatten("", after, a)
	out := []Change{}
	for p, v := range b {
		if w, ok := a[p]; !ok || w != v {
			out = append(out, Change{Path: p, Before: v, After: a[p]})
		}
	}
	for p, w := range a {
		if _, ok := b[p]; !ok {
			out = append(out, Change{Path: p, After: w})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func flatten(prefix string, v any, out map[string]string) {
	if ignoredPaths[prefix] {
		return
	}
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, x, out)
		}
	case []any:
		for i, x := range t {
			flatten(fmt.Sprintf("%s[%d]", prefix, i), x, out)
		}
	default:
		b, err := json.Marshal(t)
		if err != nil {
			b = fmt.Appendf(nil, "%v", t)
		}
		out[prefix] = string(b)
	}
}

// failedTests evaluates the "test" operations of a JSON patch action
// against obj and describes those that fail, e.g. "spec.ports[0].targetPort
// is 9090, the fix expected 8080". Hand-written: the JSON patch libraries
// in the module graph apply a whole patch and report only that a test
// failed, not which value the object holds instead.
func failedTests(act *findings.Action, obj map[string]any) []string {
	if act == nil || act.PatchType != types.JSONPatchType {
		return nil
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if json.Unmarshal(act.Patch, &ops) != nil {
		return nil
	}
	var out []string
	for _, op := range ops {
		if op.Op != "test" {
			continue
		}
		var want any
		if json.Unmarshal(op.Value, &want) != nil {
			continue
		}
		wantJSON, _ := json.Marshal(want)
		got, ok := lookupPointer(obj, op.Path)
		if !ok {
			out = append(out, fmt.Sprintf("%s is gone, the fix expected %s", pointerPath(op.Path), wantJSON))
			continue
		}
		gotJSON, _ := json.Marshal(got)
		if string(gotJSON) != string(wantJSON) {
			out = append(out, fmt.Sprintf("%s is %s, the fix expected %s", pointerPath(op.Path), gotJSON, wantJSON))
		}
	}
	return out
}

// lookupPointer resolves an RFC 6901 JSON pointer in v.
func lookupPointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch t := v.(type) {
		case map[string]any:
			x, ok := t[tok]
			if !ok {
				return nil, false
			}
			v = x
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(t) {
				return nil, false
			}
			v = t[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// pointerPath shows a JSON pointer as a field path: /spec/ports/0/x is
// spec.ports[0].x.
func pointerPath(ptr string) string {
	var b strings.Builder
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}
