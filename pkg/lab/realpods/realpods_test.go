package realpods_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/podnet"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// testImage prefixes the images this package's resolver runs.
const testImage = "kdiag.test/realpods/"

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{
		Nodes:    2,
		Lab:      lab.Options{Pods: lab.PodsReal},
		Resolver: resolve,
		Program:  program,
		BackOff:  500 * time.Millisecond,
	})
}

// resolve runs kdiag.test/realpods/<program> as this test binary's program.
func resolve(_ context.Context, _ *corev1.Pod, c *corev1.Container, _ map[string]string) (runtime.Command, bool, error) {
	name, ok := strings.CutPrefix(c.Image, testImage)
	if !ok {
		return runtime.Command{}, false, nil
	}
	cmd, err := runtime.ProgramCommand(name, c.Args...)
	return cmd, err == nil, err
}

// program is the test binary re-executed as a container.
func program(ctx context.Context, name string, args []string) error {
	switch name {
	case "serve": // serve PORT [READY_PATH_STATUS]: HTTP on PORT
		l, err := net.Listen("tcp", ":"+args[0])
		if err != nil {
			return err
		}
		fmt.Printf("listening on %s as %s\n", l.Addr(), os.Getenv("POD_NAME"))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Printf("request %s from %s\n", r.URL.Path, r.RemoteAddr)
			_, _ = io.WriteString(w, "hello from "+os.Getenv("POD_NAME")+"\n")
		})}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case "hog":
		fmt.Println("allocating")
		var keep [][]byte
		for ctx.Err() == nil {
			b := make([]byte, 4<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	}
	return fmt.Errorf("unknown test program %q", name)
}

func setup(t *testing.T) (*lab.Cluster, kubernetes.Interface, string) {
	t.Helper()
	if err := podnet.Check(); err != nil {
		t.Skipf("real pods: %v", err)
	}
	c := labtest.Cluster(t)
	if c.DataPlane() == nil {
		t.Fatal("the lab runs without data plane although Pods is real")
	}
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ns := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	labtest.CreateNamespace(t, context.Background(), cs, ns)
	return c, cs, ns
}

func serverSpec(port int, probe *corev1.Probe) corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{
		Name: "web", Image: testImage + "serve", Args: []string{strconv.Itoa(port)},
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
		Env:            []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		ReadinessProbe: probe,
	}}}
}

// waitPod polls a pod until ok accepts it.
func waitPod(t *testing.T, cs kubernetes.Interface, ns, name, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	labtest.WaitFor(t, context.Background(), fmt.Sprintf("pod %s/%s %s", ns, name, what), func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return ok(p), nil
	})
	return last
}

// netnsOf returns the network namespace file of a real pod.
func netnsOf(c *lab.Cluster, p *corev1.Pod) string {
	n := c.DataPlane().Network
	return podnet.NetnsDir + "/" + n.PodNetns(string(p.UID))
}

func TestOOMKilledAndRestarted(t *testing.T) {
	_, cs, ns := setup(t)
	spec := corev1.PodSpec{Containers: []corev1.Container{{
		Name: "hog", Image: testImage + "hog",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("40Mi")}},
	}}}
	labtest.CreatePod(t, context.Background(), cs, ns, "hog", nil, spec, false)
	p := waitPod(t, cs, ns, "hog", "OOMKilled and restarted", func(p *corev1.Pod) bool {
		if len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		c := p.Status.ContainerStatuses[0]
		return c.RestartCount >= 1 && c.LastTerminationState.Terminated != nil
	})
	c := p.Status.ContainerStatuses[0]
	if r := c.LastTerminationState.Terminated.Reason; r != "OOMKilled" {
		t.Errorf("lastState.terminated.reason = %q, want OOMKilled", r)
	}
	if c.LastTerminationState.Terminated.ExitCode != 137 {
		t.Errorf("exit code %d, want 137", c.LastTerminationState.Terminated.ExitCode)
	}
	if !strings.HasPrefix(c.ContainerID, "containerd://") {
		t.Errorf("containerID %q", c.ContainerID)
	}
	if p.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("QoS %s, want Burstable", p.Status.QOSClass)
	}
}

// TestServiceTargetPort: a ClusterIP reaches the endpoint's targetPort
// through the real kube-proxy; a wrong targetPort is refused (RST).
func TestServiceTargetPort(t *testing.T) {
	c, cs, ns := setup(t)
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	labtest.CreatePod(t, ctx, cs, ns, "web", labels, serverSpec(8080, nil), false)
	client := labtest.CreatePod(t, ctx, cs, ns, "client", nil, serverSpec(9090, nil), false)
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service: %v", err)
	}
	web := waitPod(t, cs, ns, "web", "Ready", labtest.PodReady)
	client = waitPod(t, cs, ns, "client", "Ready", labtest.PodReady)
	from := netnsOf(c, client)
	target := net.JoinHostPort(svc.Spec.ClusterIP, "80")

	var body string
	labtest.WaitFor(t, ctx, "GET http://"+target+" from the client pod", func(ctx context.Context) (bool, error) {
		body, err = get(ctx, from, "http://"+target+"/")
		return err == nil, nil
	})
	if want := "hello from web"; !strings.Contains(body, want) {
		t.Errorf("answer %q, want %q", body, want)
	}
	// The pod IP in status is the real one.
	if b, err := get(ctx, from, "http://"+net.JoinHostPort(web.Status.PodIP, "8080")+"/"); err != nil || !strings.Contains(b, "web") {
		t.Errorf("GET the pod IP %s: %q, %v", web.Status.PodIP, b, err)
	}

	patch := `{"spec":{"ports":[{"port":80,"targetPort":9376}]}}`
	if _, err := cs.CoreV1().Services(ns).Patch(ctx, "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch targetPort: %v", err)
	}
	var last error
	labtest.WaitFor(t, ctx, "connection refused with the wrong targetPort", func(ctx context.Context) (bool, error) {
		conn, err := podnet.DialIn(ctx, from, "tcp", target)
		if err == nil {
			conn.Close()
		}
		last = err
		return errors.Is(err, syscall.ECONNREFUSED), nil
	})
	t.Logf("with targetPort 9376: %v", last)
}

func get(ctx context.Context, netns, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return podnet.DialIn(ctx, netns, network, addr)
		},
		DisableKeepAlives: true,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestReadinessAndEndpointSlices: a failing readiness probe keeps a pod
// not Ready and out of the Service's ready endpoints.
func TestReadinessAndEndpointSlices(t *testing.T) {
	_, cs, ns := setup(t)
	ctx := context.Background()
	labels := map[string]string{"app": "probed"}
	tcp := func(port int) *corev1.Probe {
		return &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}}
	}
	httpGet := &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
	labtest.CreatePod(t, ctx, cs, ns, "good", labels, serverSpec(8080, httpGet), false)
	labtest.CreatePod(t, ctx, cs, ns, "bad", labels, serverSpec(8080, tcp(8081)), false)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "probed"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	good := waitPod(t, cs, ns, "good", "Ready", labtest.PodReady)
	bad := waitPod(t, cs, ns, "bad", "Running", labtest.PodRunning)
	time.Sleep(3 * time.Second) // three probe periods
	bad, _ = cs.CoreV1().Pods(ns).Get(ctx, "bad", metav1.GetOptions{})
	if labtest.PodReady(bad) {
		t.Fatalf("pod bad is Ready although its probe's port 8081 is closed")
	}
	labtest.WaitFor(t, ctx, "EndpointSlice with good ready and bad not ready", func(ctx context.Context) (bool, error) {
		list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=probed"})
		if err != nil {
			return false, err
		}
		ready := map[string]bool{}
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				ready[e.Addresses[0]] = e.Conditions.Ready != nil && *e.Conditions.Ready
			}
		}
		r, seen := ready[bad.Status.PodIP]
		return ready[good.Status.PodIP] && (!seen || !r), nil
	})
}

// TestKubectlLogs reads a real container's log through the API server,
// which asks the simulated kubelet's logs endpoint.
func TestKubectlLogs(t *testing.T) {
	c, cs, ns := setup(t)
	ctx := context.Background()
	labtest.CreatePod(t, ctx, cs, ns, "talker", nil, serverSpec(8080, nil), false)
	talker := waitPod(t, cs, ns, "talker", "Running", labtest.PodRunning)
	var logs []byte
	labtest.WaitFor(t, ctx, "kubectl logs talker", func(ctx context.Context) (bool, error) {
		var err error
		logs, err = cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Container: "web"}).DoRaw(ctx)
		if err != nil {
			t.Logf("logs: %v", err)
			return false, nil
		}
		return strings.Contains(string(logs), "listening on"), nil
	})
	if !strings.Contains(string(logs), "as talker") {
		t.Errorf("logs %q lack the pod's name from its env", logs)
	}
	tail, err := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{TailLines: new(int64)}).DoRaw(ctx)
	if err != nil || len(tail) != 0 {
		t.Errorf("logs with tailLines=0: %q, %v; want nothing", tail, err)
	}
	if _, err := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Previous: true}).DoRaw(ctx); err == nil {
		t.Error("logs --previous of a container that never restarted: no error")
	}

	// --timestamps and --since, from the CRI log's time stamps.
	stamped, err := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Timestamps: true}).DoRaw(ctx)
	if first, _, _ := strings.Cut(string(stamped), " "); err != nil || !strings.HasPrefix(first, "20") {
		t.Errorf("logs --timestamps = %q, %v; want lines starting with their time", stamped, err)
	} else if ts, perr := time.Parse(time.RFC3339Nano, first); perr != nil || time.Since(ts) > time.Minute {
		t.Errorf("logs --timestamps: first time %q (%v), want a recent RFC 3339 time", first, perr)
	}
	time.Sleep(2 * time.Second)
	recent, err := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{SinceSeconds: new(int64(1))}).DoRaw(ctx)
	if err != nil || strings.Contains(string(recent), "listening on") {
		t.Errorf("logs --since=1s = %q, %v; want nothing as old as the start line", recent, err)
	}

	// kubectl logs -f: a request logged after the stream opened arrives.
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stream, err := cs.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Follow: true}).Stream(fctx)
	if err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	defer stream.Close()
	if _, err := get(ctx, netnsOf(c, talker), "http://"+net.JoinHostPort(talker.Status.PodIP, "8080")+"/followed"); err != nil {
		t.Fatalf("GET talker: %v", err)
	}
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "request /followed") {
				found <- true
				return
			}
		}
		found <- false
	}()
	if !<-found {
		t.Error("logs -f never showed the request made after it started")
	}

	// Deleting the pod stops it and frees its network namespace.
	netns := netnsOf(c, talker)
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "talker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, ctx, "pod talker gone with its namespace", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, "talker", metav1.GetOptions{})
		_, serr := os.Stat(netns)
		return apierrors.IsNotFound(err) && os.IsNotExist(serr), nil
	})
}

// TestMissingConfigMapThenCreated: a real pod whose env names a missing
// ConfigMap waits with CreateContainerConfigError, and starts once the
// ConfigMap exists.
func TestMissingConfigMapThenCreated(t *testing.T) {
	_, cs, ns := setup(t)
	ctx := context.Background()
	spec := serverSpec(8080, nil)
	spec.Containers[0].Env = append(spec.Containers[0].Env, corev1.EnvVar{Name: "MODE", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "mode"},
	}})
	labtest.CreatePod(t, ctx, cs, ns, "configured", nil, spec, false)
	p := waitPod(t, cs, ns, "configured", "waiting with CreateContainerConfigError", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "CreateContainerConfigError"
	})
	if msg := p.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "settings") {
		t.Errorf("waiting message %q does not name the ConfigMap", msg)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"}, Data: map[string]string{"mode": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, cs, ns, "configured", "Running once the ConfigMap exists", labtest.PodReady)
}

// TestPodsReachTheAPIServer: from a pod's namespace, the pods' kubeconfig
// reaches the API server (through the kubelet's relay), while the admin
// kubeconfig names 127.0.0.1 only.
func TestPodsReachTheAPIServer(t *testing.T) {
	c, cs, ns := setup(t)
	ctx := context.Background()
	labtest.CreatePod(t, ctx, cs, ns, "caller", nil, serverSpec(8080, nil), false)
	p := waitPod(t, cs, ns, "caller", "Running", labtest.PodRunning)
	if host := c.RESTConfig().Host; !strings.Contains(host, "127.0.0.1") {
		t.Errorf("admin server %s, want 127.0.0.1", host)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Layout().PodKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg.Host, c.DataPlane().APIServerHost()) {
		t.Errorf("pods' server %s, want the link's host address %s", cfg.Host, c.DataPlane().APIServerHost())
	}
	netns := netnsOf(c, p)
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return podnet.DialIn(ctx, netns, network, addr)
	}
	podCS := kubernetes.NewForConfigOrDie(cfg)
	labtest.WaitFor(t, ctx, "GET /version from the pod's namespace", func(ctx context.Context) (bool, error) {
		_, err := podCS.Discovery().ServerVersion()
		return err == nil, nil
	})
}
