package runtime

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerEnv is a container's environment as the kubelet builds it:
// envFrom ConfigMaps, then env (value, or valueFrom a pod field or a
// ConfigMap key), with $(VAR) references expanded, after the runtime's
// own entries (Options.Env). Secrets are not supported: the lab's programs
// need none.
func (r *Runtime) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP netip.Addr) ([]string, error) {
	out := append([]string{}, r.opts.Env...)
	vals := map[string]string{}
	for _, kv := range out {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	add := func(k, v string) {
		vals[k] = v
		out = append(out, k+"="+v)
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm, err := r.configMap(ctx, pod.Namespace, ef.ConfigMapRef.Name)
		if err != nil {
			if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
				continue
			}
			return nil, err
		}
		for k, v := range cm.Data {
			add(ef.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			add(e.Name, expand(e.Value, vals))
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldValue(pod, e.ValueFrom.FieldRef.FieldPath, podIP)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			add(e.Name, v)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := r.configMap(ctx, pod.Namespace, ref.Name)
			if err != nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: key %s not in ConfigMap %s/%s", e.Name, ref.Key, pod.Namespace, ref.Name)
			}
			add(e.Name, v)
		default:
			return nil, fmt.Errorf("env %s: only fieldRef and configMapKeyRef sources are supported in the lab", e.Name)
		}
	}
	return out, nil
}

func (r *Runtime) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if r.opts.Client == nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: the runtime has no API client", ns, name)
	}
	cm, err := r.opts.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get ConfigMap %s/%s: %w", ns, name, err)
	}
	return cm, nil
}

// fieldValue resolves a downward-API field path.
func fieldValue(pod *corev1.Pod, path string, podIP netip.Addr) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP.String(), nil
	case "status.hostIP", "status.hostIPs":
		return pod.Status.HostIP, nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// expandContainer returns a copy of c whose command and args have their
// $(VAR) references expanded with env, as the kubelet does before it
// starts a container.
func expandContainer(c *corev1.Container, env []string) *corev1.Container {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	out := c.DeepCopy()
	for i := range out.Command {
		out.Command[i] = expand(out.Command[i], vals)
	}
	for i := range out.Args {
		out.Args[i] = expand(out.Args[i], vals)
	}
	return out
}

// expand replaces $(NAME) with vals[NAME] when NAME is defined, keeps
// undefined references as they are, and turns $$ into $: Kubernetes'
// dependent-variable syntax. Hand-written: the kubelet's implementation
// lives in k8s.io/kubernetes, which kdiag does not import.
func expand(s string, vals map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vals[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
