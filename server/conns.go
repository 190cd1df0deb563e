package server

import (
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// connTracker is the xDS listener, keeping each accepted connection by
// its client address, so a shed stream's connection can be closed and its
// client must dial anew (a client reuses its connection for its next
// stream otherwise).
//
// It also bounds the connections: those whose handshake is still under
// way (pending: in all, and per client host, so a host that opens
// connections and never completes TLS holds only its share, each for at
// most the handshake timeout), and those established, counted once their
// handshake completed (countingCreds). One past a bound is closed at once
// and counted by reason.
type connTracker struct {
	net.Listener
	// plain: no handshake (plaintext); a connection is established when
	// accepted, and countingCreds is not used.
	plain           bool
	max, maxPending int
	refused         func(reason string)
	mu              sync.Mutex
	conns           map[string]*trackedConn
	pending, open   int
	pendingOf       map[string]int // by client host
}

func newConnTracker(l net.Listener, max int, refused func(reason string)) *connTracker {
	return &connTracker{Listener: l, max: max, maxPending: maxPendingHandshakes, refused: refused,
		conns: map[string]*trackedConn{}, pendingOf: map[string]int{}}
}

// maxPendingHandshakes bounds the connections whose handshake is under
// way, and maxPendingPerHost those of one client host.
const (
	maxPendingHandshakes = 1024
	maxPendingPerHost    = 64
)

// Accept implements net.Listener.
func (t *connTracker) Accept() (net.Conn, error) {
	for {
		c, err := t.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := remoteHost(c)
		t.mu.Lock()
		if t.plain {
			if t.open >= t.max {
				t.mu.Unlock()
				t.refused("too_many") // counted before the close the client sees
				_ = c.Close()
				continue
			}
			t.open++
			tc := &trackedConn{Conn: c, t: t, host: host, est: true}
			t.conns[c.RemoteAddr().String()] = tc
			t.mu.Unlock()
			return tc, nil
		}
		if t.pending >= t.maxPending || t.pendingOf[host] >= maxPendingPerHost {
			t.mu.Unlock()
			t.refused("handshakes")
			_ = c.Close()
			continue
		}
		t.pending++
		t.pendingOf[host]++
		tc := &trackedConn{Conn: c, t: t, host: host}
		t.conns[c.RemoteAddr().String()] = tc
		t.mu.Unlock()
		return tc, nil
	}
}

// established counts raw's handshake as done, or refuses it when
// --max-connections are open.
func (t *connTracker) established(raw net.Conn) error {
	tc, ok := raw.(*trackedConn)
	if !ok {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tc.done || tc.est {
		return nil
	}
	if t.open >= t.max {
		return errTooManyConns
	}
	tc.est = true
	t.unpendLocked(tc)
	t.open++
	return nil
}

func (t *connTracker) unpendLocked(tc *trackedConn) {
	t.pending--
	if t.pendingOf[tc.host]--; t.pendingOf[tc.host] <= 0 {
		delete(t.pendingOf, tc.host)
	}
}

func remoteHost(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

var errTooManyConns = errors.New("too many xDS connections open (serve --max-connections)")

// closeNow closes the connection of remote, if it is open.
func (t *connTracker) closeNow(remote string) { t.closeLater(remote, 0) }

// closeLater closes the connection of remote after a moment, time for
// the stream's status to reach the client.
func (t *connTracker) closeLater(remote string, after time.Duration) {
	time.AfterFunc(after, func() {
		t.mu.Lock()
		c := t.conns[remote]
		t.mu.Unlock()
		if c != nil {
			_ = c.Close()
		}
	})
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	host string
	// guarded by t.mu
	est, done bool
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	if !c.done {
		c.done = true
		if c.est {
			c.t.open--
		} else {
			c.t.unpendLocked(c)
		}
		if c.t.conns[c.RemoteAddr().String()] == c {
			delete(c.t.conns, c.RemoteAddr().String())
		}
	}
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// countingCreds are a server's transport credentials (TLS, or none in
// plaintext) that tell the tracker when a connection's handshake is done,
// so --max-connections counts established connections only; one past it
// fails its handshake.
type countingCreds struct {
	credentials.TransportCredentials
	t       *connTracker
	refused func(reason string)
}

func (c countingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := c.t.established(raw); err != nil {
		c.refused("too_many") // counted before the close the client sees
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, info, nil
}

func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{c.TransportCredentials.Clone(), c.t, c.refused}
}
