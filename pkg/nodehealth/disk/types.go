// Package disk tracks the usage of the filesystems that hold the kubelet,
// container runtime and log directories, sets a condition with hysteresis
// when one fills up, and then finds what fills it with a du-like walk that
// is bounded in entries, depth, time and I/O priority.
package disk

import "time"

// Filesystem is the usage of one filesystem, with the configured paths it
// holds (paths on the same filesystem are reported once).
type Filesystem struct {
	// Paths are the configured paths on this filesystem, in config order.
	Paths []string `json:"paths"`
	// Device is the filesystem's device number (st_dev), which identifies it.
	Device uint64 `json:"device"`
	// TotalBytes, UsedBytes and AvailableBytes are as df shows them: used
	// is total minus free, available is what unprivileged users may still use.
	TotalBytes     uint64 `json:"totalBytes"`
	UsedBytes      uint64 `json:"usedBytes"`
	AvailableBytes uint64 `json:"availableBytes"`
	// UsedPercent is used / (used + available), as df computes Use%.
	UsedPercent float64 `json:"usedPercent"`
	// InodesTotal and InodesUsed count inodes; InodesUsedPercent is 0 on
	// filesystems without an inode limit (btrfs reports 0 inodes).
	InodesTotal       uint64  `json:"inodesTotal"`
	InodesUsed        uint64  `json:"inodesUsed"`
	InodesUsedPercent float64 `json:"inodesUsedPercent"`
}

// Consumer is one directory and the disk space under it.
type Consumer struct {
	// Path is the directory.
	Path string `json:"path"`
	// Bytes is the allocated size under Path (st_blocks, as du counts),
	// within the filesystem and the walk's bounds.
	Bytes int64 `json:"bytes"`
}

// Scan is the result of one bounded walk of a filesystem's paths.
type Scan struct {
	// Paths are the roots walked.
	Paths []string `json:"paths"`
	// Time is when the walk started; Duration how long it took.
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration"`
	// Entries is the number of directory entries looked at.
	Entries int `json:"entries"`
	// Truncated says which bound stopped the walk ("" when it completed):
	// the sizes are then lower bounds.
	Truncated string `json:"truncated,omitempty"`
	// Errors are paths that could not be read (the walk went on).
	Errors []string `json:"errors,omitempty"`
	// Top are the largest directories, largest first.
	Top []Consumer `json:"top"`
}
