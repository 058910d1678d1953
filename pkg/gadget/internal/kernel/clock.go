package kernel

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// BootClock converts bpf_ktime_get_boot_ns() stamps to wall-clock time.
type BootClock struct {
	offset time.Duration // wall - boot
}

// NewBootClock samples both clocks once.
func NewBootClock() (BootClock, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return BootClock{}, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	now := time.Now()
	return BootClock{offset: time.Duration(now.UnixNano() - ts.Nano())}, nil
}

// Time converts a boot-time stamp in nanoseconds.
func (c BootClock) Time(bootNs uint64) time.Time {
	return time.Unix(0, int64(bootNs)+int64(c.offset))
}

// ErrnoName returns the symbolic name of a positive errno, e.g.
// "ECONNREFUSED", or "errno N" when it has none.
func ErrnoName(n int32) string {
	if n == 0 {
		return ""
	}
	if name := unix.ErrnoName(unix.Errno(n)); name != "" {
		return name
	}
	return fmt.Sprintf("errno %d", n)
}

// CString returns the bytes of b up to the first NUL.
func CString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
