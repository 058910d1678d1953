// Package agentclient reaches the kdiag agent on a node through the API
// server's pod proxy (pods/proxy), so that the CLI needs no extra port,
// no port-forward and no network path to the node: whoever may proxy to the
// agent's pod can ask it for a report or a gadget stream.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// Defaults matching deploy/agent.
const (
	// DefaultNamespace is where the agent DaemonSet runs.
	DefaultNamespace = "kube-system"
	// DefaultSelector selects the agent's pods.
	DefaultSelector = "app.kubernetes.io/name=kdiag-agent"
	// DefaultPortName is the agent's named container port.
	DefaultPortName = "metrics"
	// DefaultPort is used when the pod declares no port of that name.
	DefaultPort = 20257
)

// ErrNoAgent reports that no running, ready agent pod was found on a node.
var ErrNoAgent = errors.New("no ready kdiag agent pod")

// Options say where the agents are. Zero fields take the defaults above.
type Options struct {
	Namespace string
	Selector  string
	PortName  string
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Selector == "" {
		o.Selector = DefaultSelector
	}
	if o.PortName == "" {
		o.PortName = DefaultPortName
	}
	return o
}

// Agent is one agent pod and the port to proxy to.
type Agent struct {
	// Node is the node the agent watches.
	Node string
	// Pod is the agent's pod.
	Pod *corev1.Pod
	// Port is the container port of the agent's HTTP listener.
	Port int
}

// Client finds agents and proxies requests to them.
type Client struct {
	cs   kubernetes.Interface
	opts Options
}

// New returns a Client.
func New(cs kubernetes.Interface, opts Options) *Client {
	return &Client{cs: cs, opts: opts.withDefaults()}
}

// Agents lists the ready agent pods, one per node (the newest when a node
// has several), sorted by node. nodes, when given, restricts the list; a
// node without a ready agent is then reported in missing.
func (c *Client) Agents(ctx context.Context, nodes ...string) (agents []Agent, missing []string, err error) {
	lo := metav1.ListOptions{LabelSelector: c.opts.Selector}
	if len(nodes) == 1 {
		lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodes[0]).String()
	}
	list, err := c.cs.CoreV1().Pods(c.opts.Namespace).List(ctx, lo)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, nil, fmt.Errorf("list agent pods in %s: %w (kdiag needs pods list there, and pods/proxy get)", c.opts.Namespace, err)
		}
		return nil, nil, fmt.Errorf("list agent pods in %s (%s): %w", c.opts.Namespace, c.opts.Selector, err)
	}
	byNode := map[string]Agent{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !ready(p) {
			continue
		}
		if old, ok := byNode[p.Spec.NodeName]; ok && !p.CreationTimestamp.After(old.Pod.CreationTimestamp.Time) {
			continue
		}
		byNode[p.Spec.NodeName] = Agent{Node: p.Spec.NodeName, Pod: p, Port: port(p, c.opts.PortName)}
	}
	want := nodes
	if len(want) == 0 {
		for n := range byNode {
			want = append(want, n)
		}
	}
	for _, n := range want {
		if a, ok := byNode[n]; ok {
			agents = append(agents, a)
		} else {
			missing = append(missing, n)
		}
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Node < agents[j].Node })
	sort.Strings(missing)
	return agents, missing, nil
}

// Agent returns the ready agent of one node, or an error wrapping ErrNoAgent.
func (c *Client) Agent(ctx context.Context, node string) (Agent, error) {
	agents, _, err := c.Agents(ctx, node)
	if err != nil {
		return Agent{}, err
	}
	if len(agents) == 0 {
		return Agent{}, fmt.Errorf("node %s: %w in %s matching %s (is the kdiag agent DaemonSet installed? see deploy/agent)", node, ErrNoAgent, c.opts.Namespace, c.opts.Selector)
	}
	return agents[0], nil
}

// Stream sends a GET for path with query through the API server's pod proxy
// and returns the response body, which the caller must close. The body
// streams: it can be read while the agent still writes.
func (c *Client) Stream(ctx context.Context, a Agent, path string, query url.Values) (io.ReadCloser, error) {
	params := map[string]string{}
	for k, v := range query {
		if len(v) > 0 {
			params[k] = v[len(v)-1]
		}
	}
	rc, err := c.cs.CoreV1().Pods(a.Pod.Namespace).ProxyGet("http", a.Pod.Name, strconv.Itoa(a.Port), path, params).Stream(ctx)
	if err != nil {
		err = responseError(a, err)
		return nil, fmt.Errorf("agent %s/%s on node %s: GET %s through the API server: %w", a.Pod.Namespace, a.Pod.Name, a.Node, path, err)
	}
	return rc, nil
}

// ResponseError is a proxied request's answer with a status other than
// 2xx: from the agent (its plain-text message), or from the API server
// itself (RBAC denial of pods/proxy, agent pod gone, agent unreachable).
// Stream and Get return it wrapped; use errors.As.
type ResponseError struct {
	// Code is the HTTP status.
	Code int
	// Message is the agent's message, or the API server's.
	Message string
	// FromAPIServer is set when the API server answered with a Status of
	// its own rather than passing the agent's answer through.
	FromAPIServer bool
	err           error
}

// Error renders the status and message, with the RBAC needed when the
// API server refused the proxy request.
func (e *ResponseError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
	if e.FromAPIServer && e.Code == http.StatusForbidden {
		msg += " (kdiag needs get on pods/proxy in the agent's namespace)"
	}
	return msg
}

// Unwrap returns client-go's error.
func (e *ResponseError) Unwrap() error { return e.err }

// responseError turns client-go's error for a non-2xx answer into a
// ResponseError. client-go decodes a Status sent by the API server; any
// other body (the agent's text) ends up, trimmed, as the single cause of
// type UnexpectedServerResponse.
func responseError(a Agent, err error) error {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return err
	}
	st := se.Status()
	re := &ResponseError{Code: int(st.Code), Message: st.Message, FromAPIServer: true, err: err}
	if d := st.Details; d != nil && len(d.Causes) == 1 && d.Causes[0].Type == metav1.CauseTypeUnexpectedServerResponse {
		re.Message, re.FromAPIServer = d.Causes[0].Message, false
	}
	if re.Code == 0 {
		re.Code = http.StatusInternalServerError
	}
	return re
}

// Get is Stream read to the end.
func (c *Client) Get(ctx context.Context, a Agent, path string, query url.Values) ([]byte, error) {
	rc, err := c.Stream(ctx, a, path, query)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("agent %s/%s on node %s: read %s: %w", a.Pod.Namespace, a.Pod.Name, a.Node, path, err)
	}
	return b, nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func port(p *corev1.Pod, name string) int {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return int(cp.ContainerPort)
			}
		}
	}
	return DefaultPort
}
