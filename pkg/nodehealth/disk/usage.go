package disk

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Usage returns the usage of the filesystems holding paths, one entry per
// filesystem (paths on the same device are merged, in the order given). A
// path that cannot be read is returned as an error and skipped.
func Usage(paths []string) ([]Filesystem, []error) {
	var out []Filesystem
	var errs []error
	byDev := map[uint64]int{}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			errs = append(errs, fmt.Errorf("disk: stat %s: %w", p, err))
			continue
		}
		dev := uint64(st.Dev) //nolint:unconvert // Dev is uint64 on amd64 but not on every arch
		if i, ok := byDev[dev]; ok {
			out[i].Paths = append(out[i].Paths, p)
			continue
		}
		fs, err := statfs(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fs.Paths, fs.Device = []string{p}, dev
		byDev[dev] = len(out)
		out = append(out, fs)
	}
	return out, errs
}

// statfs reads one filesystem's usage the way df does.
func statfs(p string) (Filesystem, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(p, &s); err != nil {
		return Filesystem{}, fmt.Errorf("disk: statfs %s: %w", p, err)
	}
	bs := uint64(s.Bsize) //nolint:gosec // a block size is positive
	fs := Filesystem{
		TotalBytes:     s.Blocks * bs,
		UsedBytes:      (s.Blocks - s.Bfree) * bs,
		AvailableBytes: s.Bavail * bs,
		InodesTotal:    s.Files,
	}
	if s.Files >= s.Ffree {
		fs.InodesUsed = s.Files - s.Ffree
	}
	// df's Use%: used / (used + available), so that the blocks reserved for
	// root count as unavailable, which is what fills up for pods.
	if d := fs.UsedBytes + fs.AvailableBytes; d > 0 {
		fs.UsedPercent = 100 * float64(fs.UsedBytes) / float64(d)
	}
	if fs.InodesTotal > 0 {
		fs.InodesUsedPercent = 100 * float64(fs.InodesUsed) / float64(fs.InodesTotal)
	}
	return fs, nil
}
