# kdiag's build and test entry points. `make test` is the README's test
# command and what CI runs.

GO ?= go
# The lab's control-plane binaries are cached outside the repo (see
# docs/commands/lab.md), so CI on a fresh clone reuses them.
TEST_TIMEOUT ?= 45m

.PHONY: build test unit lab-binaries generate bench

build:
	$(GO) build -o bin/kdiag ./cmd/kdiag

# Builds (or finds cached) etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kube-proxy from the pinned tools/k8s module, then runs
# every test: unit, integration against the real control plane, and the
# eBPF gadget tests (as root).
test: lab-binaries
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Unit tests only: no control plane, no root.
unit:
	$(GO) test -short -count=1 ./...

lab-binaries:
	$(GO) run ./cmd/kdiag lab build

# Regenerates the committed eBPF objects (needs clang, llvm, libbpf-dev).
generate:
	$(GO) generate ./pkg/gadget/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
