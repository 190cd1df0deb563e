package xds

import (
	"github.com/xdshard/xdshard/snapshot"
)

// Partial state-of-the-world responses.
//
// The xDS protocol requires every state-of-the-world response for
// Listeners and Clusters to carry the whole state, but groups every other
// type as the incremental protocol does: a client keeps the
// ClusterLoadAssignments and RouteConfigurations a response leaves out
// (Envoy's EDS cluster and RDS subscription ignore an update that lacks
// their resource; grpc-go's EDS and RDS resource types are not
// AllResourcesRequiredInSotW). istiod sends such partial EDS pushes when
// only endpoints changed (pilot/pkg/xds/eds.go, canSendPartialFullPushes).
//
// xdshard sends one when it knows what the client holds: the client ACKed
// the type's last response (a NACK leaves that unknown), for the same
// subscription, and the push is not forced (EDS after CDS and RDS after
// LDS must carry every resource, so warming clusters and listeners
// complete; a client starting the type over must get it all). The
// response then carries the subscribed resources whose versions differ
// from the ACKed set's, under the new set's version. On a mesh-wide
// endpoint change this is one ClusterLoadAssignment per stream instead of
// the ~70 it subscribes to, and it is made once per (ACKed set, new set,
// subscription) for every stream of a tenant.

// partialType tells whether responses of typeURL may leave unchanged
// resources out for a client of view v.
func partialType(v snapshot.View, typeURL string) bool {
	if v != snapshot.ViewEnvoy && v != snapshot.ViewGRPC {
		return false
	}
	return typeURL == snapshot.EndpointType || typeURL == snapshot.RouteType
}

// partialBase returns the set a response of t to c may be made relative
// to, or nil when it must carry every subscribed resource. Called with
// c.mu held.
func (s *Server) partialBase(c *conn, t string, st *typeState) *snapshot.Set {
	if s.opts.FullSotW || !partialType(c.view, t) || st.force || st.wildcard || st.nonce == "" {
		return nil
	}
	if st.holds == nil || st.holdsHash != st.hash {
		return nil
	}
	return st.holds
}

// changedItems lists the resources of set named in names (sorted) that
// base lacks or holds at another version.
func changedItems(set, base *snapshot.Set, names []string) []*snapshot.Resource {
	var out []*snapshot.Resource
	for _, n := range names {
		r := set.Get(n)
		if r == nil {
			continue
		}
		if o := base.Get(n); o != nil && (o == r || o.Version == r.Version) {
			continue
		}
		out = append(out, r)
	}
	return out
}
