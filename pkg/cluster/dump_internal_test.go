package cluster

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// The fast JSON decoder must decode Kubernetes objects exactly as the
// standard library does, custom unmarshalers (Quantity, Time, IntOrString,
// raw managed fields) included.
func TestFastDecoderMatchesStandardLibrary(t *testing.T) {
	const doc = `{"kind":"PodList","apiVersion":"v1","items":[{
	  "metadata":{"name":"a","namespace":"shop","creationTimestamp":"2026-05-20T09:00:00Z",
	    "labels":{"app":"a"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"a-1","uid":"u","controller":true}],
	    "managedFields":[{"manager":"kcm","operation":"Update","apiVersion":"v1","time":"2026-05-20T09:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{}}}}]},
	  "spec":{"nodeName":"n1","containers":[{"name":"app","image":"x","ports":[{"name":"http","containerPort":3000,"protocol":"TCP"}],
	    "resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"1.5Gi"}},
	    "readinessProbe":{"httpGet":{"path":"/","port":"http"},"periodSeconds":10}}]},
	  "status":{"phase":"Running","podIP":"10.244.0.5","startTime":"2026-05-20T09:00:01Z",
	    "containerStatuses":[{"name":"app","ready":true,"restartCount":3,"image":"x","imageID":"y",
	      "state":{"running":{"startedAt":"2026-05-20T09:00:02Z"}},
	      "lastState":{"terminated":{"exitCode":137,"reason":"OOMKilled","finishedAt":"2026-05-20T08:59:00Z"}}}]}}]}`
	var fast, std corev1.PodList
	if err := unmarshalList([]byte(doc), &fast); err != nil {
		t.Fatalf("fast decode: %v", err)
	}
	if err := json.Unmarshal([]byte(doc), &std); err != nil {
		t.Fatalf("std decode: %v", err)
	}
	if !equality.Semantic.DeepEqual(fast, std) {
		t.Errorf("decoders disagree:\nfast: %+v\nstd:  %+v", fast.Items[0], std.Items[0])
	}
	if got := fast.Items[0].Spec.Containers[0].Resources.Limits.Memory().String(); got != "1536Mi" {
		t.Errorf("memory limit = %s, want 1536Mi", got)
	}
}
