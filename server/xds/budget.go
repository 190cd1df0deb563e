package xds

import (
	"fmt"
	"net"
	"strings"
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
	if reason, held, limit, who := s.tryTake(c, delta); reason != "" {
		return s.refused.refuse(reason, codes.ResourceExhausted,
			"%s would hold %d bytes of resource names, node metadata and NACK texts, more than the %d allowed %s", who, held, limit, budgetFlag[reason])
	}
	return nil
}

var budgetFlag = map[string]string{
	"connection_budget": "per connection (spread the streams over more connections)",
	"identity_budget":   "per client (--client-subscription-bytes)",
}

// holdNACK counts the text of st's new NACK in c's budgets in place of the
// last one's, and returns the text to keep: where the budgets are full, a
// short note of its length instead (not counted, and bounded), so a NACK
// never ends a stream.
func (s *Server) holdNACK(c *conn, st *typeState, text string) string {
	_, _, _, _ = s.tryTake(c, -st.nackHeld)
	c.heldBytes -= st.nackHeld
	st.nackHeld = 0
	if reason, _, _, _ := s.tryTake(c, len(text)); reason != "" {
		return fmt.Sprintf("(%d bytes, not kept: the %s is full)", len(text), strings.ReplaceAll(reason, "_", " "))
	}
	st.nackHeld = len(text)
	c.heldBytes += len(text)
	return text
}

// tryTake is take's accounting: it adds delta unless that grows a budget
// past its limit, and then names the budget, what it would hold, its
// limit and whose it is.
func (s *Server) tryTake(c *conn, delta int) (reason string, held, limit int, who string) {
	if c.remote == "" || delta == 0 {
		return "", 0, 0, ""
	}
	b, id := s.budgets, c.idKey()
	b.mu.Lock()
	defer b.mu.Unlock()
	if delta > 0 {
		if n := b.byConn[c.remote] + delta; n > s.limits.ConnSubscriptionBytes {
			return "connection_budget", n, s.limits.ConnSubscriptionBytes, "the streams of connection " + c.remote
		}
		if n := b.byID[id] + delta; n > s.limits.IdentitySubscriptionBytes {
			return "identity_budget", n, s.limits.IdentitySubscriptionBytes, "the streams of " + id
		}
	}
	add(b.byConn, c.remote, delta)
	add(b.byID, id, delta)
	return "", 0, 0, ""
}

func add(m map[string]int, k string, delta int) {
	if m[k] += delta; m[k] <= 0 {
		delete(m, k)
	}
}
