package repair

import (
	"context"
	"net"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestRunBadInput(t *testing.T) {
	// A port nobody listens on: connection refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	unreachable := &rest.Config{Host: "https://" + addr}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no config", Config{Provider: ExecProvider{Command: []string{"true"}}}, "no REST config"},
		{"no provider", Config{REST: unreachable}, "no provider"},
		{"unreachable API server", Config{REST: unreachable, Provider: ExecProvider{Command: []string{"true"}}}, "cannot reach the API server at https://" + addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Run(context.Background(), tc.cfg, Options{MetricsAddr: "0"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error with %q, got %v", tc.want, err)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is not one line: %q", err)
			}
		})
	}
}

func TestNewProviderBadInput(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	for _, tc := range []struct {
		pc   ProviderConfig
		want string
	}{
		{ProviderConfig{}, "no --provider"},
		{ProviderConfig{Name: "azure"}, `unknown provider "azure"`},
		{ProviderConfig{Name: "exec"}, "needs --exec-command"},
		{ProviderConfig{Name: "exec", ExecCommand: []string{"  "}}, "needs --exec-command"},
		{ProviderConfig{Name: "lab", LabHealsAt: "reinstall"}, `--lab-heals-at "reinstall"`},
	} {
		if _, err := NewProvider(cfg, tc.pc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want an error with %q, got %v", tc.pc, tc.want, err)
		}
	}
	for _, name := range ProviderNames() {
		pc := ProviderConfig{Name: name, ExecCommand: []string{"true"}}
		p, err := NewProvider(cfg, pc)
		if err != nil || p.Name() != name {
			t.Errorf("provider %s: got %v, %v", name, p, err)
		}
	}
}
