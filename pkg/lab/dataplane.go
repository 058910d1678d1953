package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/kdiag/kdiag/pkg/lab/cgroups"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
)

// PodsMode says whether the lab runs pods as real processes.
type PodsMode string

// Pod modes.
const (
	// PodsSimulated only posts pod statuses (the zero value's meaning):
	// cheap, for 1,000-node load tests and machines without root.
	PodsSimulated PodsMode = "simulated"
	// PodsReal builds the data plane (node network, cgroups, kube-proxy)
	// and fails when the machine cannot.
	PodsReal PodsMode = "real"
	// PodsAuto is PodsReal when the machine allows it (root, iproute2,
	// iptables, cgroups), else PodsSimulated.
	PodsAuto PodsMode = "auto"
)

// ParsePodsMode parses a --pods flag value.
func ParsePodsMode(s string) (PodsMode, error) {
	switch m := PodsMode(s); m {
	case PodsSimulated, PodsReal, PodsAuto:
		return m, nil
	}
	return "", fmt.Errorf("--pods must be auto, real or simulated, got %q", s)
}

// DataPlane is what a lab in real mode adds to the machine, recorded in
// state.json so that `kdiag lab down` removes it even after every lab
// process was killed: the node network (namespaces, links, and the
// iptables rules in them) and the lab's cgroup trees (with whatever
// process still runs in them).
type DataPlane struct {
	// ID is the lab's random ID; every name below derives from it.
	ID string `json:"id"`
	// Network is the node network.
	Network podnet.Network `json:"network"`
	// Cgroups are the hierarchies and CgroupParent the lab's directory in
	// each of them.
	Cgroups      cgroups.Roots  `json:"cgroups"`
	CgroupParent cgroups.Parent `json:"cgroupParent"`
}

// APIServerHost is where the node network (kube-proxy) and the pods reach
// the API server: the host end of the node network's link, where the
// simulated kubelet forwards connections to the API server on 127.0.0.1
// (see kubelet.RealPods).
//
// The API server itself stays on 127.0.0.1, so that host clients, the
// admin kubeconfig included, never use the link's address: once the lab
// is down that address is gone, and a stale client dialing it would send
// packets out of the machine's default route.
func (d *DataPlane) APIServerHost() string { return d.Network.HostAddr.Addr().String() }

// APIServerURL is the API server's URL from the node network and the pods
// (see APIServerHost), given its port.
func (d *DataPlane) APIServerURL(port int) string {
	return "https://" + net.JoinHostPort(d.APIServerHost(), strconv.Itoa(port))
}

// PodEnv is the environment every real container gets: where the API
// server is, as a kubelet sets it, and the pods' kubeconfig.
func (d *DataPlane) PodEnv(l Layout, port int) []string {
	return []string{
		"KUBERNETES_SERVICE_HOST=" + d.APIServerHost(),
		"KUBERNETES_SERVICE_PORT=" + strconv.Itoa(port),
		"KUBECONFIG=" + l.PodKubeconfig(),
	}
}

// checkRealPods reports why real pods cannot run here.
func checkRealPods() error {
	if err := podnet.Check(); err != nil {
		return err
	}
	if _, err := cgroups.Detect(); err != nil {
		return fmt.Errorf("real pods need cgroups: %w", err)
	}
	return nil
}

// newDataPlane builds the data plane of a lab per mode: nil for simulated
// pods, or when mode is auto and the machine cannot run real pods (said on
// progress).
func newDataPlane(ctx context.Context, mode PodsMode, progress io.Writer) (*DataPlane, error) {
	switch mode {
	case "", PodsSimulated:
		return nil, nil
	case PodsAuto:
		if err := checkRealPods(); err != nil {
			fmt.Fprintf(progress, "kdiag lab: pods are simulated: %v\n", err)
			return nil, nil
		}
	case PodsReal:
		if err := checkRealPods(); err != nil {
			return nil, fmt.Errorf("--pods=real: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown pods mode %q", mode)
	}
	roots, err := cgroups.Detect()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("lab ID: %w", err)
	}
	id := hex.EncodeToString(b)
	n, err := podnet.Create(ctx, id)
	if err != nil {
		err = fmt.Errorf("create the node network: %w", err)
		if mode == PodsAuto {
			fmt.Fprintf(progress, "kdiag lab: pods are simulated: %v\n", err)
			return nil, nil
		}
		return nil, err
	}
	return &DataPlane{ID: id, Network: n, Cgroups: roots, CgroupParent: cgroups.Parent("kdiag-lab-" + id)}, nil
}

// teardown removes the data plane: every process left in the lab's
// cgroups, the cgroups, then the namespaces and links. It is idempotent.
func (d *DataPlane) teardown(ctx context.Context) error {
	if d == nil {
		return nil
	}
	var errs []error
	if err := d.Cgroups.RemoveAll(d.CgroupParent); err != nil {
		errs = append(errs, err)
	}
	if err := d.Network.Delete(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the lab's data plane (%s): %w", d.ID, err)
	}
	return nil
}

// Leftovers lists what of the data plane still exists (namespaces, link,
// cgroup directories). Tests check that it is empty after `lab down`.
func (d *DataPlane) Leftovers() []string {
	if d == nil {
		return nil
	}
	out := d.Network.Leftovers()
	for _, dir := range d.Cgroups.Dirs(d.CgroupParent) {
		if exists(dir) {
			out = append(out, "cgroup "+dir)
		}
	}
	return out
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
