package logmon

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed defaults/*.json
var defaultFiles embed.FS

// Defaults returns the built-in monitors: kernel-monitor (OOMKilling,
// TaskHung, KernelOops, Ext4Error, IOError, KernelDeadlock, ...),
// readonly-monitor (ReadonlyFilesystem) and systemd-monitor
// (FrequentKubeletRestart, FrequentContainerdRestart from journald).
func Defaults() ([]*Config, error) {
	names, err := fs.Glob(defaultFiles, "defaults/*.json")
	if err != nil {
		return nil, fmt.Errorf("list built-in monitors: %w", err)
	}
	var out []*Config
	for _, n := range names {
		b, err := defaultFiles.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read built-in monitor %s: %w", n, err)
		}
		c, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("built-in monitor %s: %w", n, err)
		}
		c.File = "builtin:" + n
		out = append(out, c)
	}
	return out, nil
}
