package testbed

import (
	"syscall"
	"time"
)

// CPU is a snapshot of CPU time used by this process and by its reaped
// children, for benchmarks that report CPU cost per event.
type CPU struct {
	Self, Children time.Duration
}

// ReadCPU samples getrusage for this process and its waited-for children.
func ReadCPU() CPU {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return CPU{Self: tv(self), Children: tv(kids)}
}

// Sub returns the CPU used between two snapshots.
func (c CPU) Sub(earlier CPU) CPU {
	return CPU{Self: c.Self - earlier.Self, Children: c.Children - earlier.Children}
}
