package fix

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
)

func problem(kind, ns, name string, fixes int) Problem {
	p := Problem{Source: SourceDoctor, Check: "some-check", Title: "broken", Object: findings.ObjectRef{Kind: kind, Namespace: ns, Name: name}}
	p.Remediation = append(p.Remediation, findings.Inspect("look", "kubectl describe "+kind))
	for i := range fixes {
		p.Remediation = append(p.Remediation, findings.MustPatch("fix", schema.GroupVersionResource{Version: "v1", Resource: "services"}, "service", ns, name, types.MergePatchType, map[string]int{"n": i}))
	}
	return p
}

func TestSelect(t *testing.T) {
	probs := []Problem{problem("Service", "shop", "order-service", 1), problem("Service", "shop", "cart", 2), problem("Service", "web", "cart", 1), problem("Node", "", "n1", 0)}
	tests := []struct {
		name      string
		q         Query
		want      string // object of the chosen fix
		wantN     int
		ambiguous int // number of choices listed
		err       string
	}{
		{name: "kind/ns/name", q: Query{Object: "service/shop/order-service"}, want: "shop/service/order-service", wantN: 1},
		{name: "ns/kind/name as doctor prints", q: Query{Object: "shop/service/order-service"}, want: "shop/service/order-service", wantN: 1},
		{name: "short kind with namespace", q: Query{Object: "svc/cart", Namespace: "web"}, want: "web/service/cart", wantN: 1},
		{name: "plural kind", q: Query{Object: "services/web/cart"}, want: "web/service/cart", wantN: 1},
		{name: "name only in two namespaces", q: Query{Object: "cart"}, ambiguous: 3},
		{name: "two fixes without a number", q: Query{Object: "service/shop/cart"}, ambiguous: 2},
		{name: "second fix", q: Query{Object: "service/shop/cart", Number: 2}, want: "shop/service/cart", wantN: 2},
		{name: "number out of range", q: Query{Object: "service/shop/cart", Number: 3}, err: "has fixes 1 to 2"},
		{name: "no such object", q: Query{Object: "service/shop/nope"}, err: `no problem reported for "service/shop/nope"`},
		{name: "read-only remediations only", q: Query{Object: "node/n1"}, err: "has no fix kdiag can apply"},
		{name: "wrong kind", q: Query{Object: "deploy/shop/order-service"}, err: "no problem reported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Select(probs, tc.q)
			var amb *AmbiguousError
			switch {
			case tc.ambiguous > 0:
				if !errors.As(err, &amb) || len(amb.Choices) != tc.ambiguous {
					t.Fatalf("err = %v, want %d choices listed", err, tc.ambiguous)
				}
				if !strings.Contains(amb.Choices[0], "--remediation 1") {
					t.Errorf("choice %q does not say how to select it", amb.Choices[0])
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line containing %q", err, tc.err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if c.Object.String() != tc.want || c.Number != tc.wantN || !c.Fix.Mutating() {
					t.Errorf("chose %s fix %d (%+v), want %s fix %d", c.Object, c.Number, c.Fix, tc.want, tc.wantN)
				}
			}
		})
	}
	if _, err := Select(nil, Query{}); err == nil || !strings.Contains(err.Error(), "reports no problem") {
		t.Errorf("no problems: err = %v", err)
	}
}

func TestSelectDrainChoicesUsePod(t *testing.T) {
	p := problem("Pod", "shop", "nginx-1", 2)
	p.Source = SourceDrain
	_, err := Select([]Problem{p}, Query{Hint: "kdiag fix --drain n1"})
	if err == nil || !strings.Contains(err.Error(), "kdiag fix --drain n1 --pod shop/nginx-1 --remediation 2") {
		t.Fatalf("err = %v, want the choices as kdiag fix --drain n1 --pod ... commands", err)
	}
}
