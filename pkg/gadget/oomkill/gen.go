package oomkill

// The BPF object and its Go bindings are committed, so building needs no clang.
// Regenerate with `go generate ./pkg/gadget/...` (needs clang, libbpf-dev, bpftool).
//go:generate sh ../internal/bpfinc/vmlinux.sh
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type event oomkill bpf/oomkill.bpf.c -- -O2 -g -Wall -I../internal/bpfinc
