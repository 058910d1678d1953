package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// volumeRefresh is how often configMap volumes are rewritten from their
// ConfigMaps (the kubelet takes up to a minute; the lab is quicker so that
// a fix shows soon).
const volumeRefresh = 5 * time.Second

// materializeVolumes writes the pod's configMap volumes to files and
// creates its emptyDir volumes, under DIR/<pod>/volumes/<name>. It
// returns volume name -> host directory. Other volume types are left out:
// a container mounting one gets no entry in its mounts.
func (r *Runtime) materializeVolumes(ctx context.Context, pod *corev1.Pod, podDir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(podDir, "volumes", v.Name)
		switch {
		case v.ConfigMap != nil:
			if err := r.writeConfigMap(ctx, pod.Namespace, v.ConfigMap, dir); err != nil {
				return nil, fmt.Errorf("volume %s of pod %s/%s: %w", v.Name, pod.Namespace, pod.Name, err)
			}
		case v.EmptyDir != nil:
			if err := ensureDir(dir); err != nil {
				return nil, err
			}
		default:
			continue
		}
		out[v.Name] = dir
	}
	return out, nil
}

// writeConfigMap writes a ConfigMap's keys (or its items) as files in dir.
// A missing optional ConfigMap yields an empty directory.
func (r *Runtime) writeConfigMap(ctx context.Context, ns string, src *corev1.ConfigMapVolumeSource, dir string) error {
	if err := ensureDir(dir); err != nil {
		return err
	}
	cm, err := r.configMap(ctx, ns, src.Name)
	if err != nil {
		if src.Optional != nil && *src.Optional {
			return nil
		}
		return err
	}
	files := map[string]string{}
	if len(src.Items) == 0 {
		for k, v := range cm.Data {
			files[k] = v
		}
	}
	for _, it := range src.Items {
		v, ok := cm.Data[it.Key]
		if !ok {
			return fmt.Errorf("key %s not in ConfigMap %s/%s", it.Key, ns, src.Name)
		}
		files[it.Path] = v
	}
	for name, content := range files {
		if strings.Contains(name, "..") {
			return fmt.Errorf("ConfigMap %s/%s: path %q leaves the volume", ns, src.Name, name)
		}
		p := filepath.Join(dir, name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, []byte(content)) {
			continue
		}
		if err := ensureDir(filepath.Dir(p)); err != nil {
			return err
		}
		// Replace atomically, so a program never reads half a file.
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// refreshVolumes rewrites the pod's configMap volumes while it runs, so
// that programs watching their files (CoreDNS's reload plugin) see edits.
func (r *Runtime) refreshVolumes(ctx context.Context, pod *corev1.Pod, podDir string) {
	t := time.NewTicker(volumeRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, v := range pod.Spec.Volumes {
			if v.ConfigMap == nil {
				continue
			}
			if err := r.writeConfigMap(ctx, pod.Namespace, v.ConfigMap, filepath.Join(podDir, "volumes", v.Name)); err != nil && ctx.Err() == nil {
				r.log.Warn("refresh configMap volume", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "err", err)
			}
		}
	}
}

// mountsOf maps a container's mount paths to host paths (with subPath, the
// file or directory inside the volume).
func mountsOf(c *corev1.Container, vols map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir, ok := vols[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			dir = filepath.Join(dir, m.SubPath)
		}
		out[m.MountPath] = dir
	}
	return out
}
