package xds

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/xdshard/xdshard/snapshot"
)

// isProxy says whether a stream is a proxy's (an Envoy sidecar or a
// proxyless gRPC client): the streams replicas balance. istiod's MCP
// streams and peers' streams stay where they are.
func (c *conn) isProxy() bool { return c.view == snapshot.ViewEnvoy || c.view == snapshot.ViewGRPC }

// ProxyStreams counts the proxy streams served now.
func (s *Server) ProxyStreams() int { return s.ProxyStreamsOf(nil) }

// ProxyStreamsOf counts the proxy streams of the tenants of says yes to
// (every tenant: nil).
func (s *Server) ProxyStreamsOf(of func(tenant string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.isProxy() && (of == nil || of(c.tenant)) {
			n++
		}
	}
	return n
}

// Shed ends up to n proxy streams, chosen at random, with Unavailable so
// their clients dial again (through the Service, to any replica). It
// returns the client addresses whose connection carried nothing but a
// shed stream: a client reuses its HTTP/2 connection for the next stream,
// so the caller closes those connections for the client to dial anew.
//
// Streams whose tenant first(tenant) says are ended first (nil: none
// first): a sharded replica sheds the streams of tenants it does not own
// before its own, so its clients drift toward their tenants' owners,
// where nothing needs fetching.
func (s *Server) Shed(n int, first func(tenant string) bool) []string {
	s.mu.Lock()
	var proxies []*conn
	perRemote := map[string]int{}
	for c := range s.conns {
		perRemote[c.remote]++
		if c.isProxy() {
			proxies = append(proxies, c)
		}
	}
	s.mu.Unlock()
	rand.Shuffle(len(proxies), func(i, j int) { proxies[i], proxies[j] = proxies[j], proxies[i] })
	if first != nil {
		slices.SortStableFunc(proxies, func(a, b *conn) int {
			switch fa, fb := first(a.tenant), first(b.tenant); {
			case fa && !fb:
				return -1
			case fb && !fa:
				return 1
			}
			return 0
		})
	}
	shed := map[string]int{}
	for _, c := range proxies[:min(n, len(proxies))] {
		c.end(shedRebalance)
		shed[c.remote]++
	}
	var alone []string
	for remote, k := range shed {
		if remote != "" && perRemote[remote] == k {
			alone = append(alone, remote)
		}
	}
	s.metrics.shed.Add(float64(min(n, len(proxies))))
	return alone
}

// Why a stream was ended by the server, as its status says.
const (
	shedRebalance = "xdshard rebalances its streams: this replica holds more than its share; reconnect (through the Service) and another replica takes the stream"
	shedDrain     = "xdshard is draining (shutting down or upgrading): reconnect (through the Service) to another replica"
)

// end ends the stream with Unavailable and why.
func (c *conn) end(why string) {
	c.shedOnce.Do(func() {
		c.shedWhy = why
		close(c.shed)
	})
}

// Drain ends every stream (proxies' and istiods') at a random moment
// within period, so their clients reconnect elsewhere a few at a time
// rather than all at once, and returns when none is left or period (and
// a second) has passed. The caller has stopped new streams (GOAWAY).
func (s *Server) Drain(period time.Duration) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.log.Info("draining: ending streams over the drain period", "streams", len(conns), "period", period)
	for _, c := range conns {
		time.AfterFunc(rand.N(period+1), func() { c.end(shedDrain) })
	}
	deadline := time.Now().Add(period + time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
