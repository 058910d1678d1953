package labtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Manifests reads the objects of a multi-document YAML file, such as
// deploy/agent/rbac.yaml, for tests that apply or inspect the shipped
// manifests. Empty documents (a leading "---", comments only) are skipped;
// a file that cannot be read or parsed fails the test.
func Manifests(t testing.TB, path string) []*unstructured.Unstructured {
	t.Helper()
	out, err := ReadManifests(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ReadManifests is Manifests returning the error instead of failing a test.
func ReadManifests(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
