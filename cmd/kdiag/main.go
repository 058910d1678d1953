package main

import (
	_ "github.com/coredns/caddy/caddyfile"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "golang.org/x/sync/errgroup"
	_ "k8s.io/cli-runtime/pkg/genericclioptions"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/pager"
	_ "sigs.k8s.io/controller-runtime"
	_ "sigs.k8s.io/yaml"
	_ "github.com/cilium/ebpf"
	_ "k8s.io/client-go/kubernetes/fake"
)

func main() {}
