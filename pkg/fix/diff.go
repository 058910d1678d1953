package fix

import (
	"encoding/json"
	"fmt"
	"sort"
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
