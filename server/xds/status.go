package xds

import (
	"slices"
	"strings"
	"time"

	"github.com/xdshard/xdshard/snapshot"
)

// ClientStatus is one connected stream's sync state, like a row of
// `istioctl proxy-status`.
type ClientStatus struct {
	ID        uint64        `json:"id"`
	Node      string        `json:"node"`
	Tenant    string        `json:"tenant"`
	View      snapshot.View `json:"view"`
	Delta     bool          `json:"delta"`
	Connected time.Time     `json:"connected"`
	// Snapshot is the tenant version the stream's last push looked at;
	// Canary says it is served a rollout's candidate first.
	Snapshot string `json:"snapshot,omitempty"`
	Canary   bool   `json:"canary,omitempty"`
	// Candidate: a peer stream fetching a rollout's candidate, whose
	// acknowledgement is the fetching replica's canaries' verdict.
	Candidate bool                  `json:"candidate,omitempty"`
	Types     map[string]TypeStatus `json:"types"`
	// Requests counts the requests the server is done with (recorded, and
	// the push they make due decided); Responses the responses it handed
	// to gRPC. Settled says every response those requests and the
	// snapshots published so far call for has been handed over: a client
	// that sent Requests requests and read Responses responses is sent
	// nothing more until something changes.
	Requests  uint64 `json:"requests"`
	Responses uint64 `json:"responses"`
	Settled   bool   `json:"settled"`
}

// TypeStatus is a stream's state for one type.
type TypeStatus struct {
	SentVersion  string    `json:"sentVersion,omitempty"`
	SentNonce    string    `json:"sentNonce,omitempty"`
	SentAt       time.Time `json:"sentAt,omitzero"`
	AckedVersion string    `json:"ackedVersion,omitempty"`
	AckedAt      time.Time `json:"ackedAt,omitzero"`
	Awaiting     bool      `json:"awaitingAck"`
	LastNACK     *NACK     `json:"lastNack,omitempty"`
	Wildcard     bool      `json:"wildcard"`
	Subscribed   int       `json:"subscribed"`
	// Sync is SYNCED (the client ACKed what was sent), STALE (a response is
	// waiting for its ACK), ERROR (the last response was NACKed) or
	// NOT_SENT, as istioctl proxy-status says it.
	Sync string `json:"sync"`
}

// Clients lists every connected stream, by tenant then node.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ClientStatus, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.status())
	}
	slices.SortFunc(out, func(a, b ClientStatus) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return int(a.ID) - int(b.ID)
	})
	return out
}

func (c *conn) status() ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := ClientStatus{ID: c.id, Node: c.node.GetId(), Tenant: c.tenant, View: c.view, Delta: c.delta, Connected: c.connected,
		Snapshot: c.lastSnap, Canary: c.canary.Load(), Candidate: c.candidate, Types: map[string]TypeStatus{}}
	// Settled before the count of responses: every response of the
	// passes that settled it is in the count.
	cs.Requests = c.progress.handled.Load()
	cs.Settled = c.progress.settled(cs.Requests)
	cs.Responses = c.progress.sent.Load()
	for _, e := range c.types {
		t, st := e.url, e.st
		ts := TypeStatus{
			SentVersion: st.sentVersion, SentNonce: st.nonce, SentAt: st.sentAt,
			AckedVersion: st.acked, AckedAt: st.ackedAt, Awaiting: st.awaiting, LastNACK: st.nack,
			Wildcard: st.wildcard, Subscribed: len(st.sorted),
		}
		switch {
		case st.nonce == "":
			ts.Sync = "NOT_SENT"
		case st.awaiting:
			ts.Sync = "STALE"
		case st.nack != nil && st.nack.Version == st.sentVersion && st.acked != st.sentVersion:
			ts.Sync = "ERROR"
		default:
			ts.Sync = "SYNCED"
		}
		cs.Types[t] = ts
	}
	return cs
}
