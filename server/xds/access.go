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
	// MCP may read istiod's config (MCP); default istio-system/istiod.
	MCP identity.AllowList
	// Peers may fetch snapshots on the peer face.
	Peers identity.AllowList
}

// DefaultMCPIdentities are the identities allowed to read MCP by default:
// istiod's service accounts in istio-system (istiod, and istiod-<rev> for
// revisions).
var DefaultMCPIdentities = identity.AllowList{"istio-system/istiod", "istio-system/istiod-*"}

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

// allowsMCP says whether an identity on the MCP allow-list may read
// revision: istiod-<rev> reads only its own revision, and istiod only
// the default one.
func allowsMCP(list identity.AllowList, id identity.Identity, revision string) bool {
	if !allowed(list, DefaultMCPIdentities, id) {
		return false
	}
	if rev, ok := strings.CutPrefix(id.ServiceAccount, "istiod-"); ok {
		return revision == rev
	}
	if id.ServiceAccount == "istiod" {
		return revision == "" || revision == "default"
	}
	return true
}

func allowed(list, fallback identity.AllowList, id identity.Identity) bool {
	if len(list) == 0 {
		list = fallback
	}
	return list.Allows(id)
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
