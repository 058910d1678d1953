package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ExecProvider runs a command for each action: the escape hatch for any
// cloud or bare metal. The command runs with KDIAG_NODE (the node name),
// KDIAG_ACTION (reboot, reimage or redeploy) and KDIAG_PROVIDER_ID (the
// node's spec.providerID) in its environment, on top of the controller's.
// Exit code 0 means the action was done.
type ExecProvider struct {
	// Command is the program and its arguments. A single string is run
	// with /bin/sh -c, so it may be a pipeline.
	Command []string
}

// Name implements Provider.
func (p ExecProvider) Name() string { return "exec" }

// Do implements Provider: it runs the command and returns its combined
// output (clipped), or an error naming the exit status.
func (p ExecProvider) Do(ctx context.Context, n *corev1.Node, a Action) (string, error) {
	if len(p.Command) == 0 {
		return "", errors.New("exec provider: no command configured (--exec-command)")
	}
	args := p.Command
	if len(args) == 1 {
		args = []string{"/bin/sh", "-c", args[0]}
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// The command's children (sh -c starts them) are killed with it when
	// the step times out: they run in their own process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Env = append(os.Environ(), "KDIAG_NODE="+n.Name, "KDIAG_ACTION="+string(a), "KDIAG_PROVIDER_ID="+n.Spec.ProviderID)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return clip(out.String()), fmt.Errorf("exec provider: %s %s of node %s: %w", args[0], a, n.Name, ctx.Err())
		}
		return clip(out.String()), fmt.Errorf("exec provider: %s for %s of node %s: %w", args[0], a, n.Name, err)
	}
	return clip(out.String()), nil
}
