#!/bin/sh
# Writes vmlinux.h (kernel types for CO-RE) next to this script from the
# running kernel's BTF, unless it is already there. It is not committed: it is
# large and only `go generate` needs it.
set -e
dir=$(dirname "$0")
[ -s "$dir/vmlinux.h" ] || bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$dir/vmlinux.h"
