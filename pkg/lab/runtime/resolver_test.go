package runtime

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestChain(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	no := func(context.Context, *corev1.Pod, *corev1.Container, map[string]string) (Command, bool, error) {
		return Command{}, false, nil
	}
	yes := func(path string) Resolver {
		return func(context.Context, *corev1.Pod, *corev1.Container, map[string]string) (Command, bool, error) {
			return Command{Path: path}, true, nil
		}
	}
	bad := func(context.Context, *corev1.Pod, *corev1.Container, map[string]string) (Command, bool, error) {
		return Command{}, false, errors.New("boom")
	}
	for _, tc := range []struct {
		name    string
		rs      []Resolver
		want    string
		wantOK  bool
		wantErr bool
	}{
		{name: "empty"},
		{name: "none answers", rs: []Resolver{no, nil, no}},
		{name: "first ok wins", rs: []Resolver{no, yes("/a"), yes("/b")}, want: "/a", wantOK: true},
		{name: "error stops", rs: []Resolver{bad, yes("/a")}, wantErr: true},
		{name: "ok before error", rs: []Resolver{yes("/a"), bad}, want: "/a", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, ok, err := Chain(tc.rs...)(context.Background(), pod, &corev1.Container{Name: "c"}, nil)
			if (err != nil) != tc.wantErr || ok != tc.wantOK || cmd.Path != tc.want {
				t.Fatalf("Chain = (%q, %v, %v), want (%q, %v, error %v)", cmd.Path, ok, err, tc.want, tc.wantOK, tc.wantErr)
			}
		})
	}
}

func TestProgramCommandRoundTrip(t *testing.T) {
	cmd, err := ProgramCommand("http-server", "--port", "8080")
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if cmd.Path != exe {
		t.Errorf("Path = %q, want this executable %q", cmd.Path, exe)
	}
	name, args, ok := ProgramInvocation(append([]string{cmd.Path}, cmd.Args...))
	if !ok || name != "http-server" || !slices.Equal(args, []string{"--port", "8080"}) {
		t.Errorf("ProgramInvocation(%q) = %q %q %v", cmd.Args, name, args, ok)
	}
	for _, argv := range [][]string{{"x"}, {"x", "lab", "program"}, {"x", "lab", "up", "y"}, {"x", "-test.run=X", "lab", "program"}} {
		if _, _, ok := ProgramInvocation(argv); ok {
			t.Errorf("ProgramInvocation(%q) = ok, want not a program", argv)
		}
	}
}
