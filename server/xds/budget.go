package xds

import (
	"net"
	"sync"

	"google.golang.org/grpc/codes"
)

// budgets account the bytes of resource names held by subscriptions per
// client connection and per client identity (its verified SPIFFE identity,
// or its host where claims are trusted), so neither many streams on one
// connection nor many connections of one client can hold more than a
// fixed amount, whatever each stream's own limit. Changed only when a
// subscription changes, never per ACK.
type budgets struct {
	mu     sync.Mutex // a leaf: taken under a stream's lock, never around one
	byConn map[string]int
	byID   map[string]int
}

func newBudgets() *budgets { return &budgets{byConn: map[string]int{}, byID: map[string]int{}} }

// idKey is who a stream's client is, for its budget.
func (c *conn) idKey() string {
	if c.identity != nil {
		return c.identity.SPIFFE()
	}
	if host, _, err := net.SplitHostPort(c.remote); err == nil {
		return host
	}
	return c.remote
}

// take adds delta bytes (negative to give back) to c's connection and
// identity, refusing growth past Limits.ConnSubscriptionBytes or
// Limits.IdentitySubscriptionBytes.
func (s *Server) take(c *conn, delta int) error {
	if c.remote == "" || delta == 0 {
		return nil
	}
	b, id := s.budgets, c.idKey()
	b.mu.Lock()
	defer b.mu.Unlock()
	if delta > 0 {
		if n := b.byConn[c.remote] + delta; n > s.limits.ConnSubscriptionBytes {
			return s.refused.refuse("connection_budget", codes.ResourceExhausted,
				"the streams of connection %s would hold %d bytes of resource names, more than the %d allowed per connection", c.remote, n, s.limits.ConnSubscriptionBytes)
		}
		if n := b.byID[id] + delta; n > s.limits.IdentitySubscriptionBytes {
			return s.refused.refuse("identity_budget", codes.ResourceExhausted,
				"the streams of %s would hold %d bytes of resource names, more than the %d allowed per client", id, n, s.limits.IdentitySubscriptionBytes)
		}
	}
	add(b.byConn, c.remote, delta)
	add(b.byID, id, delta)
	return nil
}

func add(m map[string]int, k string, delta int) {
	if m[k] += delta; m[k] <= 0 {
		delete(m, k)
	}
}
