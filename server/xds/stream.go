package xds

import (
	"context"
	"errors"
	"io"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/snapshot"
)

// request is what SotW and delta requests have in common here.
type request interface{ GetNode() *core.Node }

// runStream binds a stream to its tenant and runs it: a receive loop that
// only records requests and signals, and the send loop. first is the
// request already read.
//
// wake, when set, tells after a request is recorded whether it may have
// made something due to send; without it, every request wakes the send
// loop.
func runStream[R request](s *Server, ctx context.Context, id *identity.Identity, first R, delta bool, recv func() (R, error), record func(*conn, R) error, wake func(*conn) bool, f face) error {
	c, err := s.bind(first.GetNode(), delta, id)
	if err != nil {
		return err
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.remote = p.Addr.String()
	}
	defer s.unbind(c)
	if c.view != snapshot.ViewPeer {
		n := proto.Size(first.GetNode())
		if err := s.take(c, n); err != nil {
			return err
		}
		c.mu.Lock()
		c.heldBytes += n
		c.mu.Unlock()
	}
	if err := record(c, first); err != nil {
		return err
	}
	c.progress.handledFirst()
	return s.loop(ctx, c, receive(c, recv, record, wake), f)
}

// receive starts a stream's receive loop: it records each request and
// signals the send loop (where wake, if set, says the request may have
// made a push due), and never waits on a send or an encode. It ends with
// the stream, reporting why on the returned channel.
func receive[R any](c *conn, recv func() (R, error), record func(*conn, R) error, wake func(*conn) bool) <-chan error {
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err == nil {
				err = record(c, req)
			}
			if err != nil {
				recvErr <- err
				return
			}
			n := c.progress.handled.Load() + 1 // this goroutine alone writes it
			woke := wake == nil || wake(c)
			if woke {
				c.progress.wokeAt.Store(n)
			}
			c.progress.handled.Store(n) // before the signal: the pass it starts covers n
			if woke {
				c.signal()
			}
		}
	}()
	return recvErr
}

// loop is a stream's send loop: it pushes whenever the tenant's snapshot
// (every tenant's, for MCP) or the stream's requests change, until the
// stream ends or its namespace leaves its tenant.
func (s *Server) loop(ctx context.Context, c *conn, recvErr <-chan error, f face) error {
	w := s.store.Watch(c.watchKey())
	defer w.Close()
	defer c.giveBackHeld()
	c.progress.watch.Store(w)
	for {
		if err := s.stillBound(c); err != nil {
			s.log.Info("stream ended: its namespace left its tenant", "node", c.node.GetId(), "reason", err)
			return err
		}
		start, signals := c.progress.handled.Load(), w.Signals()
		if err := s.push(ctx, c, f, w.C()); err != nil {
			return err
		}
		if len(c.dirty) == 0 { // else another pass comes at once
			c.progress.pushed.Store(start)
			c.progress.watched.Store(signals)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "xdshard is shutting down; reconnect to another replica")
		case <-c.shed:
			s.log.Debug("stream ended by the server", "node", c.node.GetId(), "why", c.shedWhy)
			return status.Error(codes.Unavailable, c.shedWhy)
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case <-c.dirty:
		case <-w.C():
		}
	}
}

// watchKey is the store watch of the stream: its tenant, or every tenant
// ("") for an MCP stream.
func (c *conn) watchKey() string {
	if c.view == snapshot.ViewMCP {
		return ""
	}
	return c.tenant
}

// face is one protocol's part in a push (SotW, delta, MCP); push is the
// shape they share.
type face interface {
	// due, called with c.mu held for a requested type with no response
	// outstanding, returns what its next response is to be made of, or
	// nil when the client has it already. It must not encode.
	due(c *conn, snap *snapshot.Snapshot, t string, st *typeState) *work
	// encode makes w's response, without any lock of the stream.
	encode(w *work)
	// commit, called with c.mu held, records w as sent and returns the
	// message, or nil when there is nothing to send after all. It makes
	// the dependent type due (EDS after CDS, RDS after LDS) when it sends
	// something the dependent must follow.
	commit(c *conn, w *work) any
	// send writes one message and returns its size in bytes.
	send(msg any) (int, error)
}

// work is one type's response on its way: picked under the lock, encoded
// outside it, committed under it again.
type work struct {
	typeURL string
	st      *typeState
	gen     uint64 // st.gen when picked

	set      *snapshot.Set // SotW and delta
	base     *snapshot.Set // SotW: the set the client holds, when the response may carry only what differs from it (partial.go)
	names    []string      // the subscription (SotW), immutable
	hash     uint64
	wildcard bool
	built    time.Time // when the snapshot was built, if its version is new to the stream

	body    []byte // SotW and MCP: the shared encoded response, without nonce
	version string
	content string // MCP: what the response was made from
}

// push sends, in type order, each type whose response must change. It
// holds c.mu only to pick and to commit, so the receive loop never waits on
// an encode or a send, and it holds a slot of the push semaphore while it
// encodes and sends, so a change that wakes every stream at once sends on
// a bounded number of them at a time.
//
// Slots go to narrow changes first (rank): a change to one tenant made
// while a change to every tenant is being pushed reaches its proxies
// before the rest of that push, not after it. changed is the stream's
// store watch: a stream waiting for a slot whose tenant gets a narrower
// version meanwhile picks again and waits at that version's rank.
func (s *Server) push(ctx context.Context, c *conn, f face, changed <-chan struct{}) error {
	if s.testPushHook != nil {
		s.testPushHook()
	}
	snap := s.serving(c)
	if c.view != snapshot.ViewMCP && snap == nil {
		return nil // the tenant's first build is still running; wait for it
	}
	c.mu.Lock()
	if snap != nil {
		c.lastSnap = snap.Version
	}
	var todo []*work
	for _, e := range c.types {
		t, st := e.url, e.st
		if !st.requested || st.awaiting {
			continue
		}
		if w := f.due(c, snap, t, st); w != nil {
			w.typeURL, w.st, w.gen = t, st, st.gen
			todo = append(todo, w)
		}
	}
	var sl *slot
	if len(todo) > 0 {
		sl, c.held = c.held, nil // a slot held for responses not answered yet (PushSlotUntilAnswered): this pass uses it
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if sl == nil || sl.given.Load() {
		rank := s.rank(c, snap)
		release, err := s.acquire(ctx, c, rank, changed)
		if errors.Is(err, errRepick) {
			c.signal()
			return nil
		}
		if err != nil {
			return err
		}
		sl = &slot{release: release}
	}
	for _, w := range todo {
		f.encode(w)
	}
	type out struct {
		msg   any
		w     *work
		built time.Time
	}
	var sends []out
	c.mu.Lock()
	for _, w := range todo {
		if w.st.gen != w.gen || w.st.awaiting {
			c.signal() // the client asked again meanwhile: look again
			continue
		}
		if msg := f.commit(c, w); msg != nil {
			if snap != nil {
				w.st.sentSnap = snap.Version
			}
			sends = append(sends, out{msg, w, w.built})
		}
	}
	c.mu.Unlock()
	// The slot is held through the sends as long as they go quickly
	// (sends of many streams at once then take turns, as they batch best)
	// and, with PushSlotUntilAnswered, until the client answers them. It
	// is given back slotHold after the sends started at the latest: a
	// stream whose client does not read (or answer) holds up another's
	// push for that long at most, however long its own send waits
	// (sendBounded).
	sl.hold(s.slotHold)
	handed := false
	defer func() {
		if !handed {
			sl.giveBack()
		}
	}()
	for _, o := range sends {
		start := time.Now()
		if !o.built.IsZero() {
			s.metrics.stage("queue", start.Sub(o.built))
		}
		if s.testSendHook != nil {
			s.testSendHook()
		}
		size, err := s.sendBounded(c, f, o.msg, o.w.typeURL)
		if err != nil {
			return err
		}
		c.progress.sent.Add(1)
		s.metrics.sent(metricType(c, o.w.typeURL), size, time.Since(start))
	}
	if s.opts.PushSlotUntilAnswered {
		c.mu.Lock()
		if c.awaitingLocked() {
			c.held, handed = sl, true // answered() gives it back
		}
		c.mu.Unlock()
	}
	return nil
}

// slot is a push slot a stream holds: given back once, when the client
// answered what it was sent, or slotHold after the sends started.
type slot struct {
	release func()
	once    sync.Once
	given   atomic.Bool
	timer   *time.Timer
}

// hold starts the slot's longest hold, unless a pass before started it.
func (sl *slot) hold(d time.Duration) {
	if sl.timer == nil {
		sl.timer = time.AfterFunc(d, sl.expire)
	}
}

// expire ends the longest hold. It runs on the timer's goroutine, which
// is not ordered after hold's write of the timer: it does not read it.
func (sl *slot) expire() { sl.once.Do(sl.free) }

// giveBack gives the slot back from the stream's goroutines (its send
// loop, or its receive loop under c.mu after the send loop handed it
// over), which are ordered after hold.
func (sl *slot) giveBack() {
	if sl.timer != nil {
		sl.timer.Stop()
	}
	sl.once.Do(sl.free)
}

func (sl *slot) free() {
	sl.given.Store(true)
	sl.release()
}

// slotHold is how long a stream's sends may hold its push slot.
const slotHold = 20 * time.Millisecond

// sendBounded sends msg; a client that has not taken it within
// SendTimeout has its connection closed (watchSends).
//
// grpc-go's SendMsg blocks while the stream's flow-control window (the
// client's) or its write quota is spent, which is how a client that does
// not read holds a send, and it returns only when the client reads or
// the stream or its connection ends; no deadline can be set on it, and
// the server cannot reset one stream from outside its handler. A send in
// a goroutine of its own, given up on a timer, cost about a tenth of a
// push's CPU, and a timer per send kept its closure for the timeout's
// length (xdshard bench: a KiB of heap per proxy after a sync). So a send
// only marks when it started, and one watchdog per server closes the
// connection of a send older than SendTimeout through EndConn: SendMsg
// then fails, the stream ends (send_timeout), and so does every stream on
// that connection, which shares the stuck stream's connection-level
// window anyway. The stream is STALE in syncz meanwhile (sent, not
// ACKed); newer versions are not queued behind the blocked send, since
// the send loop picks the latest state only once it returns. Without
// EndConn (the MCP port, whose only client is istiod) a send is not
// bounded.
func (s *Server) sendBounded(c *conn, f face, msg any, typeURL string) (int, error) {
	c.sendingSince.Store(time.Now().UnixNano())
	n, err := f.send(msg)
	c.sendingSince.Store(0)
	if err != nil && c.sendTimedOut.Load() {
		return n, s.refused.refuse("send_timeout", codes.Unavailable,
			"node %.256q did not take its %s response within %s (it does not read its stream); its connection is closed, reconnect (serve --send-timeout)",
			c.node.GetId(), typeURL, s.opts.SendTimeout)
	}
	return n, err
}

// watchSends closes, every quarter of SendTimeout, the connections of the
// streams whose send has waited longer than SendTimeout, until the server
// closes.
func (s *Server) watchSends() {
	if s.opts.EndConn == nil {
		return
	}
	tick := time.NewTicker(max(s.opts.SendTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			var stuck []*conn
			s.mu.Lock()
			for c := range s.conns {
				if since := c.sendingSince.Load(); since != 0 && now.Sub(time.Unix(0, since)) > s.opts.SendTimeout && c.remote != "" {
					stuck = append(stuck, c)
				}
			}
			s.mu.Unlock()
			for _, c := range stuck {
				c.sendTimedOut.Store(true)
				s.opts.EndConn(c.remote)
			}
		}
	}
}

func metricType(c *conn, t string) string {
	if c.view == snapshot.ViewMCP {
		return "mcp"
	}
	return t
}

// rank is a push's place in the queue for a slot: istiod's MCP streams
// first (they carry every tenant; peer streams are on the peer face's own
// server, where they all rank alike), then by the breadth of the change
// that made the version sent, narrowest first; a version of unknown
// breadth ranks last.
func (s *Server) rank(c *conn, snap *snapshot.Snapshot) int {
	switch {
	case c.view == snapshot.ViewMCP || c.view == snapshot.ViewPeer:
		return 0
	case snap == nil || snap.Breadth <= 0:
		return math.MaxInt
	}
	return snap.Breadth
}

// errRepick: the stream's tenant got a version that ranks before the one
// it waited to push; it picks again.
var errRepick = errors.New("a narrower version arrived while waiting for a push slot")

// acquire takes a slot of the push semaphore at rank, or gives up when the
// stream or the server ends, or with errRepick when changed signals a
// version of the stream's tenant that ranks before rank (a signal that
// does not leaves the stream marked to push again once this push is done).
func (s *Server) acquire(ctx context.Context, c *conn, rank int, changed <-chan struct{}) (func(), error) {
	release := func() { s.metrics.inflight.Dec(); s.pushSem.Release() }
	w := s.pushSem.Enter(rank)
	if w == nil {
		s.metrics.inflight.Inc()
		return release, nil
	}
	s.metrics.queued.Inc()
	defer s.metrics.queued.Dec()
	for {
		select {
		case <-w.Ready():
			s.metrics.inflight.Inc()
			return release, nil
		case <-changed:
			if s.rank(c, s.serving(c)) < rank {
				s.pushSem.Cancel(w)
				s.metrics.repicked.Inc()
				return nil, errRepick
			}
			c.signal() // pushed after this one
		case <-ctx.Done():
			s.pushSem.Cancel(w)
			return nil, ctx.Err()
		case <-s.ctx.Done():
			s.pushSem.Cancel(w)
			return nil, status.Error(codes.Unavailable, "xdshard is shutting down; reconnect to another replica")
		}
	}
}

// stillBound ends a stream whose namespace has left its tenant: the
// tenant's current snapshot no longer serves it and the mesh puts it
// elsewhere (or nowhere). The client reconnects and is bound anew. A
// namespace the mesh still puts in the tenant, but whose snapshot is not
// built yet, keeps its stream.
func (s *Server) stillBound(c *conn) error {
	if c.view == snapshot.ViewMCP || c.view == snapshot.ViewPeer || s.store.Current(c.tenant).Serves(c.namespace) {
		return nil
	}
	t, ok := s.opts.Resolver.TenantOf(c.namespace)
	if ok && t == c.tenant {
		return nil
	}
	if !ok {
		return status.Errorf(codes.Unavailable, "namespace %q of node %q no longer belongs to any tenant (it was in %q); reconnect once it is configured again", c.namespace, c.node.GetId(), c.tenant)
	}
	return status.Errorf(codes.Unavailable, "namespace %q of node %q moved from tenant %q to %q; reconnect to receive its new tenant's config", c.namespace, c.node.GetId(), c.tenant, t)
}

func (c *conn) nextNonceLocked() string {
	c.seq++
	return strconv.FormatUint(c.seq, 10)
}
