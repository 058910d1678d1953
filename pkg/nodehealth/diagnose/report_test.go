package diagnose

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

func TestConfigMapRoundTrip(t *testing.T) {
	r := &Report{Node: "n1", Time: time.Date(2026, 11, 28, 16, 0, 0, 0, time.UTC), Trigger: "request",
		Disk:    Disk{Filesystems: []disk.Filesystem{{Paths: []string{"/var/log"}, UsedPercent: 91}}},
		Verdict: Verdict{Culprit: CulpritDisk, Summary: "disk: /var/log 91% used", Rule: "disk-full"}}
	cm, err := r.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	if cm.Name != ConfigMapName("n1") || cm.Namespace != "kube-system" || cm.Labels[Label] != "true" {
		t.Errorf("ConfigMap %s/%s labels %v: want kube-system/kdiag-node-report-n1 labelled %s=true", cm.Namespace, cm.Name, cm.Labels, Label)
	}
	got, err := Parse(cm)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != "n1" || got.Verdict != r.Verdict || !got.Time.Equal(r.Time) || got.Disk.Filesystems[0].UsedPercent != 91 {
		t.Errorf("Parse(ConfigMap(r)) = %+v, want %+v", got, r)
	}
}

func TestParseErrors(t *testing.T) {
	meta := metav1.ObjectMeta{Namespace: Namespace, Name: ConfigMapName("n1")}
	for _, tc := range []struct {
		name string
		cm   *corev1.ConfigMap
		want string
	}{
		{"nil", nil, "no ConfigMap"},
		{"no key", &corev1.ConfigMap{ObjectMeta: meta}, `no "report.json" key`},
		{"not JSON", &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{DataKey: "{"}}, "unexpected end"},
		{"no node", &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{DataKey: "{}"}}, "names no node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.cm)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
