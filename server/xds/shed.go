package xds

import (
	"math/rand/v2"

	"github.com/xdshard/xdshard/snapshot"
)

// isProxy says whether a stream is a proxy's (an Envoy sidecar or a
// proxyless gRPC client): the streams replicas balance. istiod's MCP
// streams and peers' streams stay where they are.
func (c *conn) isProxy() bool { return c.view == snapshot.ViewEnvoy || c.view == snapshot.ViewGRPC }

// ProxyStreams counts the proxy streams served now.
func (s *Server) ProxyStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.isProxy() {
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
func (s *Server) Shed(n int) []string {
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
	shed := map[string]int{}
	for _, c := range proxies[:min(n, len(proxies))] {
		c.shedOnce.Do(func() { close(c.shed) })
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
