package labtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadManifests(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "---\n# only a comment\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: kube-system\n---\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n")
	objs, err := ReadManifests(good)
	if err != nil {
		t.Fatalf("ReadManifests(good): %v", err)
	}
	var got []string
	for _, u := range objs {
		got = append(got, u.GetKind()+"/"+u.GetName())
	}
	if want := []string{"ServiceAccount/a", "ConfigMap/b"}; !slices.Equal(got, want) {
		t.Errorf("objects: want %v, got %v", want, got)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"malformed document", write("bad.yaml", "apiVersion: v1\n---\nkind: [unclosed\n"), "document 2"},
	} {
		if _, err := ReadManifests(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
