package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// A dump is the folder tree that `kubectl cluster-info dump --output-directory DIR`
// writes: DIR/nodes.json and DIR/<namespace>/<resource>.json with a List
// object in each file (.yaml with -o yaml). kubectl dumps events, services,
// pods, deployments, replicasets, daemonsets and replicationcontrollers;
// `kdiag dump` writes the same layout plus the resources kdiag also reads
// (endpointslices, statefulsets, poddisruptionbudgets, the kube-system
// configmaps and the kube-node-lease leases) and a metadata file.

// DumpMetaFile is the file `kdiag dump` writes at the top of a dump with the
// time and source of the read and its gaps.
const DumpMetaFile = "kdiag-dump.json"

// DumpMeta is the content of DumpMetaFile.
type DumpMeta struct {
	Source    string    `json:"source"`
	Namespace string    `json:"namespace,omitempty"`
	TakenAt   time.Time `json:"takenAt"`
	Gaps      []Gap     `json:"gaps,omitempty"`
}

// dumpFile describes one resource file of a dump.
type dumpFile struct {
	res Resource
	// only restricts the file to one namespace folder ("" for every
	// namespace folder); top means it sits at the top of the dump.
	only string
	top  bool
	// decode reads one file and appends its items to the snapshot under mu.
	decode func(data []byte, s *Snapshot, mu *sync.Mutex) error
}

func dumpFiles() []dumpFile {
	return []dumpFile{
		{res: ResNodes, top: true, decode: decodeInto(func(l *corev1.NodeList, s *Snapshot) { s.Nodes = append(s.Nodes, l.Items...) })},
		{res: ResPods, decode: decodeInto(func(l *corev1.PodList, s *Snapshot) { s.Pods = append(s.Pods, l.Items...) })},
		{res: ResServices, decode: decodeInto(func(l *corev1.ServiceList, s *Snapshot) { s.Services = append(s.Services, l.Items...) })},
		{res: ResEndpointSlices, decode: decodeInto(func(l *discoveryv1.EndpointSliceList, s *Snapshot) {
			s.EndpointSlices = append(s.EndpointSlices, l.Items...)
		})},
		{res: ResDeployments, decode: decodeInto(func(l *appsv1.DeploymentList, s *Snapshot) { s.Deployments = append(s.Deployments, l.Items...) })},
		{res: ResReplicaSets, decode: decodeInto(func(l *appsv1.ReplicaSetList, s *Snapshot) { s.ReplicaSets = append(s.ReplicaSets, l.Items...) })},
		{res: ResStatefulSets, decode: decodeInto(func(l *appsv1.StatefulSetList, s *Snapshot) { s.StatefulSets = append(s.StatefulSets, l.Items...) })},
		{res: ResDaemonSets, decode: decodeInto(func(l *appsv1.DaemonSetList, s *Snapshot) { s.DaemonSets = append(s.DaemonSets, l.Items...) })},
		{res: ResPDBs, decode: decodeInto(func(l *policyv1.PodDisruptionBudgetList, s *Snapshot) {
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, l.Items...)
		})},
		{res: ResEvents, decode: decodeInto(func(l *corev1.EventList, s *Snapshot) { s.Events = append(s.Events, l.Items...) })},
		{res: ResConfigMaps, only: "kube-system", decode: decodeInto(func(l *corev1.ConfigMapList, s *Snapshot) {
			for _, cm := range l.Items {
				if keepConfigMap(&cm) {
					s.ConfigMaps = append(s.ConfigMaps, cm)
				}
			}
		})},
		{res: ResLeases, only: corev1.NamespaceNodeLease, decode: decodeInto(func(l *coordinationv1.LeaseList, s *Snapshot) { s.Leases = append(s.Leases, l.Items...) })},
	}
}

// decodeInto returns a decoder for one list type. Decoding runs outside the
// lock; only the append holds it.
func decodeInto[L any](appendFn func(*L, *Snapshot)) func([]byte, *Snapshot, *sync.Mutex) error {
	return func(data []byte, s *Snapshot, mu *sync.Mutex) error {
		var l L
		if err := unmarshalList(data, &l); err != nil {
			return err
		}
		mu.Lock()
		appendFn(&l, s)
		mu.Unlock()
		return nil
	}
}

// unmarshalList decodes JSON with github.com/goccy/go-json, a drop-in
// replacement for encoding/json that decodes Kubernetes lists about five
// times faster (see docs/performance.md): a 100,000-pod dump is most of a
// gigabyte of JSON. YAML goes through sigs.k8s.io/yaml, which honours the
// json tags of the Kubernetes types. If the fast decoder fails, the
// standard library decodes again, so error messages are the familiar ones.
func unmarshalList(data []byte, v any) error {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if err := gojson.Unmarshal(data, v); err == nil {
			return nil
		}
		if err := json.Unmarshal(data, v); err != nil {
			return describeJSONError(data, err)
		}
		return nil
	}
	return yaml.Unmarshal(data, v)
}

// describeJSONError turns a byte offset into a line number, which is what a
// person opening the file needs.
func describeJSONError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := int64(-1)
	switch {
	case errors.As(err, &se) && se.Offset >= int64(len(bytes.TrimRight(data, " \t\r\n"))):
		return fmt.Errorf("file ends in the middle of the JSON document (truncated?)")
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("file ends in the middle of the JSON document (truncated?)")
	}
	if off < 0 {
		return err
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line := bytes.Count(data[:off], []byte{'\n'}) + 1
	return fmt.Errorf("line %d: %w", line, err)
}

// ReadDump loads a snapshot from a dump tree in fsys (use os.DirFS for a
// folder). Files are decoded in parallel. A missing or malformed file
// becomes a Gap and the rest is still read; the call fails only when fsys
// does not look like a dump at all.
func ReadDump(fsys fs.FS, source string) (*Snapshot, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read dump %s: %w", source, err)
	}
	var namespaces []string
	top := map[string]string{} // resource name -> file name at the top level
	for _, e := range entries {
		if e.IsDir() {
			namespaces = append(namespaces, e.Name())
			continue
		}
		if base, ok := listFileBase(e.Name()); ok {
			top[base] = e.Name()
		}
	}
	sort.Strings(namespaces)
	if _, ok := top[string(ResNodes)]; !ok && len(namespaces) == 0 {
		return nil, fmt.Errorf("%s does not look like a cluster dump: no nodes.json and no namespace folders (make one with `kubectl cluster-info dump --all-namespaces --output-directory DIR` or `kdiag dump DIR`)", source)
	}

	s := &Snapshot{Source: source}
	if data, err := fs.ReadFile(fsys, DumpMetaFile); err == nil {
		var meta DumpMeta
		if err := json.Unmarshal(data, &meta); err != nil {
			s.Gaps = append(s.Gaps, Gap{Resource: "metadata", Reason: GapMalformed, Message: fmt.Sprintf("%s: %v", DumpMetaFile, err)})
		} else {
			s.Source, s.Namespace, s.TakenAt = meta.Source+" (dump "+source+")", meta.Namespace, meta.TakenAt
			s.Gaps = append(s.Gaps, meta.Gaps...)
		}
	}

	var mu sync.Mutex
	g := new(errgroup.Group)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, df := range dumpFiles() {
		folders := []string{"."}
		if !df.top {
			folders = namespaces
			if df.only != "" {
				folders = []string{df.only}
			}
		}
		found := 0
		var missingIn []string
		for _, dir := range folders {
			name, ok := findListFile(fsys, dir, string(df.res), top)
			if !ok {
				missingIn = append(missingIn, dir)
				continue
			}
			found++
			g.Go(func() error {
				data, err := fs.ReadFile(fsys, name)
				if err == nil {
					err = df.decode(data, s, &mu)
				}
				if err != nil {
					mu.Lock()
					s.Gaps = append(s.Gaps, Gap{Resource: df.res, Namespace: nsOf(dir), Reason: GapMalformed, Message: fmt.Sprintf("%s: %v", name, err)})
					mu.Unlock()
				}
				return nil
			})
		}
		switch {
		case found == 0 && (df.top || df.only != "" || len(namespaces) > 0):
			s.Gaps = append(s.Gaps, Gap{Resource: df.res, Namespace: df.only, Reason: GapNotInDump,
				Message: fmt.Sprintf("the dump has no %s file", df.res)})
		case found > 0:
			for _, dir := range missingIn {
				s.Gaps = append(s.Gaps, Gap{Resource: df.res, Namespace: nsOf(dir), Reason: GapNotInDump,
					Message: fmt.Sprintf("the dump has no %s/%s file", dir, df.res)})
			}
		}
	}
	_ = g.Wait() // decoders never fail the group: failures become gaps
	sortGaps(s.Gaps)
	if s.TakenAt.IsZero() {
		s.TakenAt = latestTimestamp(s)
	}
	return s, nil
}

func nsOf(dir string) string {
	if dir == "." {
		return ""
	}
	return dir
}

func listFileBase(name string) (string, bool) {
	for _, ext := range []string{".json", ".yaml", ".yml"} {
		if strings.HasSuffix(name, ext) {
			return strings.TrimSuffix(name, ext), true
		}
	}
	return "", false
}

func findListFile(fsys fs.FS, dir, base string, top map[string]string) (string, bool) {
	if dir == "." {
		name, ok := top[base]
		return name, ok
	}
	for _, ext := range []string{".json", ".yaml", ".yml"} {
		name := path.Join(dir, base+ext)
		if st, err := fs.Stat(fsys, name); err == nil && !st.IsDir() {
			return name, true
		}
	}
	return "", false
}

func sortGaps(gs []Gap) {
	sort.SliceStable(gs, func(i, j int) bool {
		if gs[i].Resource != gs[j].Resource {
			return gs[i].Resource < gs[j].Resource
		}
		return gs[i].Namespace < gs[j].Namespace
	})
}

// latestTimestamp estimates when a plain kubectl dump was taken: the newest
// heartbeat, lease renewal or event in it. Ages are then measured against
// the dump's own time, so the report does not change with the day it runs.
func latestTimestamp(s *Snapshot) time.Time {
	var t time.Time
	later := func(c time.Time) {
		if c.After(t) {
			t = c
		}
	}
	for i := range s.Nodes {
		for _, c := range s.Nodes[i].Status.Conditions {
			later(c.LastHeartbeatTime.Time)
		}
	}
	for i := range s.Leases {
		if rt := s.Leases[i].Spec.RenewTime; rt != nil {
			later(rt.Time)
		}
	}
	for i := range s.Events {
		later(EventTime(&s.Events[i]).Time)
	}
	for i := range s.Pods {
		for _, c := range s.Pods[i].Status.Conditions {
			later(c.LastTransitionTime.Time)
		}
	}
	return t
}
