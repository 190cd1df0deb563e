package xds

import (
	"context"
	"errors"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/xdshard/xdshard/identity"
)

// Access decides what a client may read by who it is, verified (a client
// certificate's SPIFFE identity, or a service-account token), not by what
// its node claims. With Authenticate nil, a node's claims are taken as
// they are: plaintext serving, on loopback or with --insecure.
type Access struct {
	Authenticate func(ctx context.Context) (identity.Identity, error)
	// Peers may fetch snapshots on the peer face.
	Peers identity.AllowList
	// DebugReaders may read the istio.io/debug pages (which show every
	// tenant) with a proven identity; default istio-system/*. The
	// replica gives it its admin readers.
	DebugReaders identity.AllowList
}

// who authenticates a stream's client: nil when the server trusts claims.
func (s *Server) who(ctx context.Context) (*identity.Identity, error) {
	if s.opts.Access.Authenticate == nil {
		return nil, nil
	}
	id, err := s.opts.Access.Authenticate(ctx)
	if err != nil {
		reason := "unauthenticated"
		var r *identity.Refusal
		if errors.As(err, &r) {
			reason = r.Reason
		}
		from := "?"
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			from = p.Addr.String()
		}
		return nil, s.refused.refuse(reason, codes.Unauthenticated, "client %s: %s", from, err)
	}
	return &id, nil
}

// checkClaims refuses a proxy whose node claims a namespace other than
// its verified identity's, in its metadata or its node ID.
func (s *Server) checkClaims(node *core.Node, id *identity.Identity) error {
	if id == nil {
		return nil
	}
	claims := []string{metaString(node, "NAMESPACE")}
	if parts := strings.Split(node.GetId(), "~"); len(parts) == 4 {
		_, ns, _ := strings.Cut(parts[2], ".")
		dom, _, _ := strings.Cut(parts[3], ".")
		claims = append(claims, ns, dom)
	}
	for _, ns := range claims {
		if ns != "" && ns != id.Namespace {
			return s.refused.refuse("claims_other_namespace", codes.PermissionDenied,
				"node %.256q claims namespace %.64q, but its %s identity %s is of namespace %q; a proxy reads only its own namespace's tenant",
				node.GetId(), ns, id.Via, id.SPIFFE(), id.Namespace)
		}
	}
	return nil
}
