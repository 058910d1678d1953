package ops

import (
	"context"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Initiator describes who runs an operation from this process, for
// spec.initiator: the tool (e.g. "kdiag drain run") and the user the API
// server authenticated (a SelfSubjectReview), or the tool alone when the
// server cannot say.
func Initiator(ctx context.Context, cs kubernetes.Interface, tool string) string {
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || r.Status.UserInfo.Username == "" {
		return tool
	}
	return tool + " (user " + r.Status.UserInfo.Username + ")"
}
