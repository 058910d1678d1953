package runtime

import (
	"context"
	"fmt"
	"os"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Command is how a container runs on the machine: a process started in the
// pod's network namespace and cgroups. The runtime adds the container's
// environment from the pod spec (env, with valueFrom fieldRef for the pod's
// name, namespace, IP and node) in front of Env, so a resolver only sets
// what it needs on top.
type Command struct {
	// Path is the executable, absolute.
	Path string
	// Args are the arguments after argv[0].
	Args []string
	// Env holds extra "KEY=value" entries; they win over the spec's.
	Env []string
	// Dir is the working directory; empty means the pod's directory under
	// the lab directory.
	Dir string
}

// Resolver decides whether a container can run for real and how. It gets
// the pod, the container and mounts, the container's volume mounts as a
// map from mountPath to the host directory (or file) holding the volume's
// content: processes share the host's mount namespace, so a program must
// read /etc/coredns/Corefile at mounts["/etc/coredns"]+"/Corefile".
//
// ok=false means "not runnable here, simulate it" (the pod then keeps the
// simulated status); an error means the container cannot start, which the
// runtime reports like a failed image pull or a bad command (the container
// waits with a reason and a message, and the runtime retries with
// back-off).
type Resolver func(ctx context.Context, pod *corev1.Pod, c *corev1.Container, mounts map[string]string) (cmd Command, ok bool, err error)

// Chain returns a resolver asking each of rs in turn; the first that
// answers ok (or fails) decides.
func Chain(rs ...Resolver) Resolver {
	rs = slices.Clone(rs)
	return func(ctx context.Context, pod *corev1.Pod, c *corev1.Container, mounts map[string]string) (Command, bool, error) {
		for _, r := range rs {
			if r == nil {
				continue
			}
			cmd, ok, err := r(ctx, pod, c, mounts)
			if err != nil {
				return Command{}, false, fmt.Errorf("container %s of pod %s/%s: %w", c.Name, pod.Namespace, pod.Name, err)
			}
			if ok {
				return cmd, true, nil
			}
		}
		return Command{}, false, nil
	}
}

// programArgs is the argv prefix, after the executable, of the lab's
// built-in programs: `kdiag lab program NAME ARGS...`. labtest.Main makes
// a test binary answer to it as kdiag does, so that the same Command runs
// in `kdiag lab up` and in tests.
var programArgs = [...]string{"lab", "program"}

// ProgramCommand is the Command running the built-in program name (for
// example "http-server") with args: this very executable (kdiag, or the
// test binary under labtest.Main) re-executed as
// `lab program NAME ARGS...`.
func ProgramCommand(name string, args ...string) (Command, error) {
	exe, err := os.Executable()
	if err != nil {
		return Command{}, fmt.Errorf("locate this executable to run lab program %s: %w", name, err)
	}
	return Command{Path: exe, Args: append(append(programArgs[:], name), args...)}, nil
}

// ProgramInvocation reports whether argv (os.Args) asks for a built-in
// program, and returns the program's name and arguments. labtest.Main uses
// it to dispatch before the test framework parses flags.
func ProgramInvocation(argv []string) (name string, args []string, ok bool) {
	if len(argv) < 4 || argv[1] != programArgs[0] || argv[2] != programArgs[1] {
		return "", nil, false
	}
	return argv[3], argv[4:], true
}
