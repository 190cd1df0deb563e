package xds

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/internal/cache"
)

// DefaultIdentitySubscriptionBytes is Limits.IdentitySubscriptionBytes's
// default (serve --client-subscription-bytes).
const DefaultIdentitySubscriptionBytes = 256 << 20

// Limits bound what one client may make the server hold or do. Every
// field is a choice of the client's; each refusal is a clear status and
// counts in xdshard_refused_requests_total{reason}. Zero fields take the
// defaults.
type Limits struct {
	// NodeBytes bounds a node (id and metadata) as encoded. Default 64 KiB;
	// istio-agent's nodes are a few KiB.
	NodeBytes int
	// Names bounds the resource names one subscription holds. Default
	// 20,000, more than Envoy asks for in any mesh xdshard serves.
	Names int
	// NameBytes bounds one resource name. Default 1 KiB.
	NameBytes int
	// Types bounds the distinct type URLs a stream may ask for. Default 16.
	Types int
	// Rate and Burst bound a stream's requests per second. Default 100/s
	// with a burst of 1,000 (a proxy ACKs every response; a burst of
	// subscriptions at start is normal).
	Rate  float64
	Burst int
	// StreamsPerConn bounds the streams of one HTTP/2 connection. Default
	// 1,000: Envoy and grpc-go open one ADS stream per connection, and load
	// harnesses (xdshard bench: 250) carry many.
	StreamsPerConn uint32
	// CacheBytes bounds the shared state-of-the-world responses kept for
	// reuse. Default 256 MiB.
	CacheBytes int64
	// FirstRequest bounds how long a new stream may wait before its first
	// request (Envoy and grpc-go send it at once). Default 10 s.
	FirstRequest time.Duration
	// SubscriptionBytes bounds the bytes of resource names one stream's
	// subscriptions hold, all its types together. Default 8 MiB (an
	// Envoy of 20,000 EDS names holds about 1.5 MiB).
	SubscriptionBytes int
	// ConnSubscriptionBytes and IdentitySubscriptionBytes bound what
	// every stream of one client connection (default 64 MiB) and of one
	// client (its identity, or its host where claims are trusted; default
	// 256 MiB: raise it where many proxies share a service account, or a
	// host in plaintext) holds of the client's choosing: the names of
	// their subscriptions, their nodes (id and metadata) and the texts of
	// the NACKs they keep.
	ConnSubscriptionBytes, IdentitySubscriptionBytes int
	// NACKBytes bounds the error text of a NACK kept per type (for
	// syncz and proxy-status) and logged; the rest is cut, its length
	// said. Default 4 KiB.
	NACKBytes int
}

func (l Limits) withDefaults() Limits {
	if l.NodeBytes <= 0 {
		l.NodeBytes = 64 << 10
	}
	if l.Names <= 0 {
		l.Names = 20000
	}
	if l.NameBytes <= 0 {
		l.NameBytes = 1 << 10
	}
	if l.Types <= 0 {
		l.Types = 16
	}
	if l.Rate <= 0 {
		l.Rate = 100
	}
	if l.Burst <= 0 {
		l.Burst = 1000
	}
	if l.StreamsPerConn == 0 {
		l.StreamsPerConn = 1000
	}
	if l.CacheBytes <= 0 {
		l.CacheBytes = cache.DefaultBytes
	}
	if l.FirstRequest <= 0 {
		l.FirstRequest = 10 * time.Second
	}
	if l.NACKBytes <= 0 {
		l.NACKBytes = 4 << 10
	}
	if l.SubscriptionBytes <= 0 {
		l.SubscriptionBytes = 8 << 20
	}
	if l.ConnSubscriptionBytes <= 0 {
		l.ConnSubscriptionBytes = 64 << 20
	}
	if l.IdentitySubscriptionBytes <= 0 {
		l.IdentitySubscriptionBytes = DefaultIdentitySubscriptionBytes
	}
	return l
}

// recvFirst receives a new stream's first request, or gives up on the
// stream when none comes within FirstRequest. grpc-go's RecvMsg has no
// deadline: on the proxies' port a timer closes the client's connection
// (EndConn), which ends the receive (one timer per stream, where a
// goroutine per stream kept about 0.7 KiB per proxy, xdshard bench); on
// the MCP port (no EndConn; istiod only) the receive runs in a goroutine
// of its own, and when the handler returns grpc-go resets the stream,
// which ends it.
func recvFirst[R any](s *Server, ctx context.Context, endConn func(remote string), recv func() (R, error)) (R, error) {
	refuse := func() error {
		return s.refused.refuse("no_first_request", codes.DeadlineExceeded,
			"the stream sent no request within %s of opening; a client's first request names its node and a type", s.limits.FirstRequest)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && endConn != nil {
		var fired atomic.Bool
		var refusal error
		remote := p.Addr.String()
		timer := time.AfterFunc(s.limits.FirstRequest, func() {
			refusal = refuse() // counted before the client sees its connection closed
			fired.Store(true)
			endConn(remote)
		})
		r, err := recv()
		if !timer.Stop() && fired.Load() {
			return r, refusal
		}
		return r, err
	}
	type result struct {
		r   R
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := recv()
		ch <- result{r, err}
	}()
	timer := time.NewTimer(s.limits.FirstRequest)
	defer timer.Stop()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-timer.C:
		var zero R
		return zero, refuse()
	}
}

// nackText is a NACK's error text as kept and logged: at most NACKBytes,
// with the length of what was cut.
func (s *Server) nackText(msg string) string {
	if len(msg) <= s.limits.NACKBytes {
		return msg
	}
	return fmt.Sprintf("%s... (%d bytes in all)", strings.ToValidUTF8(msg[:s.limits.NACKBytes], ""), len(msg))
}

// refusals counts and logs refused requests by reason.
type refusals struct {
	c   *prometheus.CounterVec
	log *slog.Logger
}

func newRefusals(reg prometheus.Registerer, log *slog.Logger) refusals {
	return refusals{register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_refused_requests_total",
		Help: "Requests and streams refused, by reason: a limit, or who the client is."}, []string{"reason"})), log}
}

// refuse counts and logs a refusal (it ends its stream: one line per
// stream at most) and returns its status.
func (r refusals) refuse(reason string, code codes.Code, format string, args ...any) error {
	r.c.WithLabelValues(reason).Inc()
	err := status.Errorf(code, format, args...)
	r.log.Info("refused", "reason", reason, "code", code.String(), "err", status.Convert(err).Message())
	return err
}

// checkNode refuses a node larger than the limit.
func (s *Server) checkNodeSize(node *core.Node) error {
	if node == nil {
		return nil
	}
	if n := proto.Size(node); n > s.limits.NodeBytes {
		return s.refused.refuse("node_too_large", codes.InvalidArgument,
			"the node (id and metadata) is %d bytes, more than the %d allowed; send less node metadata", n, s.limits.NodeBytes)
	}
	return nil
}

// checkNames refuses a request naming too many or too long resources.
func (s *Server) checkNames(names ...[]string) error {
	total := 0
	for _, list := range names {
		total += len(list)
		for _, n := range list {
			if len(n) > s.limits.NameBytes {
				return s.refused.refuse("name_too_long", codes.InvalidArgument,
					"resource name of %d bytes, more than the %d allowed: %.64q...", len(n), s.limits.NameBytes, n)
			}
		}
	}
	if total > s.limits.Names {
		return s.refused.refuse("too_many_names", codes.ResourceExhausted,
			"a request names %d resources, more than the %d allowed", total, s.limits.Names)
	}
	return nil
}

// checkTypeLocked refuses a stream's type URL beyond the limit of distinct
// types, so a client cannot grow a stream's state with made-up types.
func (s *Server) checkTypeLocked(c *conn, typeURL string) error {
	if c.types.get(typeURL) != nil {
		return nil
	}
	if len(c.types) >= s.limits.Types {
		return s.refused.refuse("too_many_types", codes.ResourceExhausted,
			"the stream asks for more than %d type URLs (the next is %.128q); xdshard serves CDS, EDS, LDS, RDS and NDS", s.limits.Types, typeURL)
	}
	return nil
}

// checkSubscriptionBytesLocked refuses a subscription of st that would
// make the stream hold more than SubscriptionBytes of names, or its
// connection or client more than theirs, were st's to hold want bytes;
// growth it allows is taken from the connection's and client's budgets
// (the caller records it in st.subBytes and c.subBytes).
func (s *Server) checkSubscriptionBytesLocked(c *conn, st *typeState, want int) error {
	if total := c.subBytes - st.subBytes + want; total > s.limits.SubscriptionBytes {
		return s.refused.refuse("subscription_too_large", codes.ResourceExhausted,
			"the stream's subscriptions would hold %d bytes of resource names, more than the %d allowed", total, s.limits.SubscriptionBytes)
	}
	if want > st.subBytes {
		return s.take(c, want-st.subBytes)
	}
	return nil
}

// nameCost is what one subscribed name costs the server beside its
// bytes: its string header in the sorted list, its map entry (delta), and
// the map's slack. Counting it makes the budgets bound the heap a
// subscription holds, short names or long (20,000 one-byte names hold
// about 1.3 MB, not 20 kB).
const nameCost = 64

// nameBytes counts what names hold, by the budgets: their bytes and
// nameCost each.
func nameBytes(names []string) int {
	n := 0
	for _, name := range names {
		n += nameHeld(name)
	}
	return n
}

// nameHeld is what one subscribed name counts in the budgets.
func nameHeld(name string) int { return len(name) + nameCost }

// checkSubscriptionLocked refuses a subscription that would grow past the
// limit of names (delta streams add names request by request).
func (s *Server) checkSubscriptionLocked(st *typeState, adding int) error {
	if len(st.sorted)+adding > s.limits.Names {
		return s.refused.refuse("too_many_names", codes.ResourceExhausted,
			"the subscription would hold %d resource names, more than the %d allowed", len(st.sorted)+adding, s.limits.Names)
	}
	return nil
}

// bucket is a stream's request rate limiter (a token bucket). Only the
// receive loop uses it.
type bucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(l Limits) *bucket {
	return &bucket{rate: l.Rate, burst: float64(l.Burst), tokens: float64(l.Burst), last: time.Now()}
}

func (b *bucket) take(now time.Time) bool {
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// checkRate refuses a request beyond the stream's rate.
func (s *Server) checkRate(c *conn) error {
	if c.rate.take(time.Now()) {
		return nil
	}
	return s.refused.refuse("rate_limited", codes.ResourceExhausted,
		"more than %.0f requests per second (burst %d) on one stream; a proxy sends one per response and subscription change", s.limits.Rate, s.limits.Burst)
}

// mcpTypeGroups are the API groups whose kinds istiod asks MCP for.
var mcpTypeGroups = []string{"networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io", "core"}

// checkMCPType refuses a type URL istiod would not send: group/version/Kind
// of an Istio group. Anything else would only grow the response cache.
func (s *Server) checkMCPType(typeURL string) error {
	parts := strings.Split(typeURL, "/")
	if len(parts) == 3 && len(typeURL) <= 128 && parts[1] != "" && parts[2] != "" {
		for _, g := range mcpTypeGroups {
			if parts[0] == g {
				return nil
			}
		}
	}
	return s.refused.refuse("bad_type_url", codes.InvalidArgument,
		"MCP type URL %.128q is not group/version/Kind of an Istio API group (%s)", typeURL, strings.Join(mcpTypeGroups, ", "))
}

// checkRevision refuses an ISTIO_REVISION that is not a revision name.
func (s *Server) checkRevision(rev string) error {
	if len(rev) <= 63 && !strings.ContainsFunc(rev, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}) {
		return nil
	}
	return s.refused.refuse("bad_revision", codes.InvalidArgument,
		"ISTIO_REVISION %.80q is not a revision name (at most 63 lowercase letters, digits, '-' and '.')", rev)
}
