package fix

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
)

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiff(t *testing.T) {
	before := obj(t, `{"metadata":{"name":"a","resourceVersion":"1","managedFields":[{"manager":"x"}]},"spec":{"ports":[{"port":80,"targetPort":8080}],"old":"x"}}`)
	after := obj(t, `{"metadata":{"name":"a","resourceVersion":"2","managedFields":[{"manager":"kdiag"}]},"spec":{"ports":[{"port":80,"targetPort":"http"}],"new":true}}`)
	got := Diff(before, after)
	want := []Change{
		{Path: "spec.new", After: "true"},
		{Path: "spec.old", Before: `"x"`},
		{Path: "spec.ports[0].targetPort", Before: "8080", After: `"http"`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %+v\nwant %+v", got, want)
	}
	if d := Diff(before, before); len(d) != 0 {
		t.Errorf("Diff of an object with itself = %+v, want none", d)
	}
}

func TestFailedTests(t *testing.T) {
	cur := obj(t, `{"spec":{"ports":[{"name":"a/b","targetPort":9090}]}}`)
	act := func(patch string) *findings.Action {
		return &findings.Action{PatchType: types.JSONPatchType, Patch: json.RawMessage(patch)}
	}
	tests := []struct {
		name string
		act  *findings.Action
		want []string
	}{
		{"value changed", act(`[{"op":"test","path":"/spec/ports/0/targetPort","value":8080},{"op":"replace","path":"/spec/ports/0/targetPort","value":3000}]`),
			[]string{"spec.ports[0].targetPort is 9090, the fix expected 8080"}},
		{"test passes", act(`[{"op":"test","path":"/spec/ports/0/targetPort","value":9090}]`), nil},
		{"escaped key", act(`[{"op":"test","path":"/spec/ports/0/name","value":"a/b"}]`), nil},
		{"path gone", act(`[{"op":"test","path":"/spec/ports/1/targetPort","value":1}]`), []string{"spec.ports[1].targetPort is gone, the fix expected 1"}},
		{"merge patch has no tests", &findings.Action{PatchType: types.MergePatchType, Patch: json.RawMessage(`{"a":1}`)}, nil},
		{"malformed patch", act(`{`), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedTests(tc.act, cur); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("failedTests = %q, want %q", got, tc.want)
			}
		})
	}
	if !strings.Contains(pointerPath("/a~1b/0/c~0d"), "a/b[0].c~d") {
		t.Errorf("pointerPath unescapes ~1 and ~0: %q", pointerPath("/a~1b/0/c~0d"))
	}
}
