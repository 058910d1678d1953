package lab

import (
	"os"
	"path/filepath"
	"strconv"
)

// Layout names the files of a lab directory:
//
//	DIR/state.json       what runs: pids, start times, ports (see State)
//	DIR/kubeconfig       admin kubeconfig (system:masters)
//	DIR/pki/             CA, serving and client certificates, SA key pair
//	DIR/config/          kubeconfigs of kube-controller-manager and kube-scheduler
//	DIR/etcd/            etcd's data directory
//	DIR/logs/<name>.log  stdout and stderr of each process
//	DIR/pods/            real pods: DIR/pods/<ns>_<name>_<uid>/<container>/<n>.log, volumes
//	DIR/.lock            held while lab up or down works on DIR
type Layout struct {
	// Dir is the absolute lab directory.
	Dir string
}

// State returns the path of the state file.
func (l Layout) State() string { return filepath.Join(l.Dir, "state.json") }

// Kubeconfig returns the path of the admin kubeconfig.
func (l Layout) Kubeconfig() string { return filepath.Join(l.Dir, "kubeconfig") }

// PKI returns the certificate directory.
func (l Layout) PKI() string { return filepath.Join(l.Dir, "pki") }

// PKIFile returns a file in the certificate directory.
func (l Layout) PKIFile(name string) string { return filepath.Join(l.Dir, "pki", name) }

// Config returns the path of a component kubeconfig.
func (l Layout) Config(component string) string {
	return filepath.Join(l.Dir, "config", component+".kubeconfig")
}

// EtcdData returns etcd's data directory.
func (l Layout) EtcdData() string { return filepath.Join(l.Dir, "etcd") }

// Log returns the log file of a process.
func (l Layout) Log(name string) string { return filepath.Join(l.Dir, "logs", name+".log") }

// CA returns the lab CA's certificate file.
func (l Layout) CA() string { return l.PKIFile(caName + ".crt") }

// Pods returns the directory of the real pods' logs and volumes.
func (l Layout) Pods() string { return filepath.Join(l.Dir, "pods") }

// PodKubeconfig returns the kubeconfig that real pods use to reach the
// API server (such as CoreDNS's kubernetes plugin): its server is the
// host end of the node network's link, reachable from the pods.
func (l Layout) PodKubeconfig() string { return l.Config(podsName) }

// Lock returns the lock file.
func (l Layout) Lock() string { return filepath.Join(l.Dir, ".lock") }

// clean removes everything a previous lab left in the directory, and only
// that, so that a --dir pointing at a directory with other files loses none
// of them.
func (l Layout) clean() error {
	for _, p := range []string{
		l.State(), l.Kubeconfig(), l.PKI(), filepath.Join(l.Dir, "config"), l.EtcdData(), filepath.Join(l.Dir, "logs"), l.Pods(),
	} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// DefaultDir returns the lab directory used without --dir:
// $XDG_RUNTIME_DIR/kdiag-lab, or <temp dir>/kdiag-lab-<uid>.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "kdiag-lab")
	}
	return filepath.Join(os.TempDir(), "kdiag-lab-"+strconv.Itoa(os.Getuid()))
}
