package tokenreview

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/xdshard/xdshard/identity"
)

// DefaultAudience is the audience istio-agent requests its token for.
const DefaultAudience = "istio-ca"

// Reviewer verifies tokens with TokenReview.
type Reviewer struct {
	client      kubernetes.Interface
	audiences   []string
	trustDomain string
}

// New returns a Reviewer over the API server of rc. trustDomain is the
// one given to the identities it verifies (Istio's default is
// cluster.local).
func New(rc *rest.Config, audiences []string, trustDomain string) (*Reviewer, error) {
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if len(audiences) == 0 {
		audiences = []string{DefaultAudience}
	}
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	return &Reviewer{client: client, audiences: audiences, trustDomain: trustDomain}, nil
}

// Verify implements identity.TokenVerifier.
func (r *Reviewer) Verify(ctx context.Context, token string) (identity.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: r.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return identity.Identity{}, &identity.Refusal{Reason: "token_review_failed", Err: fmt.Errorf("the API server could not review the token (xdshard needs create on tokenreviews.authentication.k8s.io): %w", err)}
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return identity.Identity{}, &identity.Refusal{Reason: "bad_token", Err: fmt.Errorf("the token is not valid for audience %v: %s", r.audiences, msg)}
	}
	if len(tr.Status.Audiences) > 0 && !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(r.audiences, a) }) {
		return identity.Identity{}, &identity.Refusal{Reason: "bad_token", Err: fmt.Errorf("the token is for audiences %v, not %v", tr.Status.Audiences, r.audiences)}
	}
	parts := strings.Split(tr.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return identity.Identity{}, &identity.Refusal{Reason: "bad_token", Err: fmt.Errorf("the token is %q's, not a service account's", tr.Status.User.Username)}
	}
	return identity.Identity{TrustDomain: r.trustDomain, Namespace: parts[2], ServiceAccount: parts[3], Via: "token"}, nil
}
