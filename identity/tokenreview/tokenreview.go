package tokenreview

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"google.golang.org/grpc/peer"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/xdshard/xdshard/identity"
)

// DefaultAudience is the audience istio-agent requests its token for.
const DefaultAudience = "istio-ca"

// The defaults of Options, and why.
const (
	// DefaultQPS and DefaultBurst are the TokenReview client's budget
	// towards the API server (client-go's default, 5/s with a burst of
	// 10, made a failover of 1,000 proxies take minutes and refuse most).
	// A burst of 1,000 lets the proxies of a failed replica, each with its
	// own token, be reviewed at once; 100/s after it reviews 5,000 in
	// about 40 s. A TokenReview of a service-account token is cheap for
	// the API server (a signature, and the bound pod or secret from its
	// cache), and its priority and fairness still protect it.
	DefaultQPS   = 100
	DefaultBurst = 1000
	// DefaultSuccessTTL bounds how long a verified token is taken without
	// asking again; the token's own exp bounds it too. The API server
	// refuses a token whose pod or service account was deleted at once,
	// the cache up to this late (a stream already open lives on until its
	// connection's age anyway). kube-apiserver's webhook cache takes 2 m.
	DefaultSuccessTTL = 5 * time.Minute
	// DefaultFailureTTL is how long a refused token is refused without
	// asking again: a junk token repeated costs one review, and a token
	// refused for a moment (its pod not yet in the API server's cache) is
	// asked about again soon.
	DefaultFailureTTL = 10 * time.Second
	// DefaultEntries bounds the verified tokens kept (about 300 bytes
	// each: 30 MB at most), DefaultFailureEntries the refused ones, apart,
	// so junk never pushes a verified token out.
	DefaultEntries        = 100_000
	DefaultFailureEntries = 10_000
	// DefaultSourceRate and DefaultSourceBurst bound the reviews one
	// client host causes (tokens seen recently cost none): a proxy has one
	// token, and a node's host-network pods a few, while a source of junk
	// tokens is held to 10/s, a tenth of DefaultQPS, and cannot starve
	// the others. Raise them where many proxies reach xdshard from one
	// address (a NAT, a gateway forwarding another cluster's proxies).
	DefaultSourceRate  = 10
	DefaultSourceBurst = 100
	// DefaultTimeout bounds one review.
	DefaultTimeout = 10 * time.Second
)

// maxSources bounds the client hosts whose budgets are kept; the least
// recently seen is forgotten (and starts again with a full budget).
const maxSources = 10_000

// Options tune a Reviewer; zero fields take the defaults' (and the Default
// constants where those are zero too).
type Options struct {
	// Audiences the token must be valid for one of (default istio-ca).
	Audiences []string
	// TrustDomain given to the identities verified (default cluster.local).
	TrustDomain string
	// QPS and Burst are the TokenReview client's rate towards the API
	// server (New only: NewForClient takes the client as it is); a
	// negative QPS sets no client-side limit.
	QPS   float32
	Burst int
	// SuccessTTL bounds how long a verified token is taken from the
	// cache; the token's exp claim bounds it too. Negative: not cached.
	SuccessTTL time.Duration
	// FailureTTL is how long a refused token is refused from the cache;
	// negative: not cached.
	FailureTTL time.Duration
	// Entries and FailureEntries bound the verified and the refused
	// tokens cached (least recently used go first).
	Entries, FailureEntries int
	// SourceRate and SourceBurst bound the reviews of tokens not cached
	// that one client host (the gRPC peer's address in the context) may
	// cause; past it Verify refuses with token_review_throttled. A
	// negative SourceRate sets no bound.
	SourceRate  float64
	SourceBurst int
	// Timeout bounds one review.
	Timeout time.Duration
}

// defaults fill the zero fields of the Options of New, NewWithOptions and
// NewForClient.
var defaults = Options{
	Audiences:      []string{DefaultAudience},
	TrustDomain:    "cluster.local",
	QPS:            DefaultQPS,
	Burst:          DefaultBurst,
	SuccessTTL:     DefaultSuccessTTL,
	FailureTTL:     DefaultFailureTTL,
	Entries:        DefaultEntries,
	FailureEntries: DefaultFailureEntries,
	SourceRate:     DefaultSourceRate,
	SourceBurst:    DefaultSourceBurst,
	Timeout:        DefaultTimeout,
}

func (o Options) withDefaults() Options {
	d := defaults
	if len(o.Audiences) == 0 {
		o.Audiences = d.Audiences
	}
	if len(o.Audiences) == 0 {
		o.Audiences = []string{DefaultAudience}
	}
	o.TrustDomain = nonZero(o.TrustDomain, d.TrustDomain, "cluster.local")
	o.QPS = nonZero(o.QPS, d.QPS, DefaultQPS)
	o.Burst = positive(o.Burst, d.Burst, DefaultBurst)
	o.SuccessTTL = nonZero(o.SuccessTTL, d.SuccessTTL, DefaultSuccessTTL)
	o.FailureTTL = nonZero(o.FailureTTL, d.FailureTTL, DefaultFailureTTL)
	o.Entries = positive(o.Entries, d.Entries, DefaultEntries)
	o.FailureEntries = positive(o.FailureEntries, d.FailureEntries, DefaultFailureEntries)
	o.SourceRate = nonZero(o.SourceRate, d.SourceRate, DefaultSourceRate)
	o.SourceBurst = positive(o.SourceBurst, d.SourceBurst, DefaultSourceBurst)
	o.Timeout = positive(o.Timeout, d.Timeout, DefaultTimeout)
	return o
}

// nonZero is the first of v, d and c that is not zero (negative values
// mean something: no bound, not cached).
func nonZero[T comparable](v, d, c T) T {
	var zero T
	if v != zero {
		return v
	}
	if d != zero {
		return d
	}
	return c
}

// positive is the first of v, d and c that is more than zero.
func positive[T int | time.Duration](v, d, c T) T {
	if v > 0 {
		return v
	}
	if d > 0 {
		return d
	}
	return c
}

// Reviewer verifies tokens with TokenReview, and keeps what it learned:
// a verified token is taken again without asking until its exp or
// SuccessTTL, a refused one refused for FailureTTL, under a keyed hash of
// the token and the audiences (the token itself is held only while it is
// reviewed). Concurrent Verify calls of one token share one review. A
// token not cached costs its client host (the gRPC peer's address) a
// review from its budget, so one host's junk tokens cannot starve the
// others' reviews.
type Reviewer struct {
	client  kubernetes.Interface
	opts    Options
	secret  [32]byte // keys the cache's hashes
	audKey  []byte   // the audiences, as hashed into each key
	now     func() time.Time
	reviews atomic.Int64
	hits    atomic.Int64
	thrott  atomic.Int64

	mu       sync.Mutex
	ok       *simplelru.LRU[key, *entry]
	refused  *simplelru.LRU[key, *entry]
	inflight map[key]*call
	sources  *simplelru.LRU[string, *bucket]
}

type key [sha256.Size]byte

// entry is a cached answer: an identity, or a refusal.
type entry struct {
	id      identity.Identity
	err     *identity.Refusal
	expires time.Time
}

// call is a review under way, which Verify calls of the same token join.
type call struct {
	done chan struct{}
	id   identity.Identity
	err  *identity.Refusal
}

// bucket is a client host's review budget.
type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Reviewer over the API server of rc. trustDomain is the
// one given to the identities it verifies (Istio's default is
// cluster.local).
func New(rc *rest.Config, audiences []string, trustDomain string) (*Reviewer, error) {
	return NewWithOptions(rc, Options{Audiences: audiences, TrustDomain: trustDomain})
}

// NewWithOptions returns a Reviewer over the API server of rc, whose
// reviews go through a client of their own with opts' QPS and Burst.
func NewWithOptions(rc *rest.Config, opts Options) (*Reviewer, error) {
	opts = opts.withDefaults()
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst, rc.RateLimiter = opts.QPS, opts.Burst, nil
	if rc.UserAgent == "" {
		rc.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc.UserAgent += " tokenreview"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return NewForClient(client, opts)
}

// NewForClient returns a Reviewer over client, as it is (its rate limit
// included).
func NewForClient(client kubernetes.Interface, opts Options) (*Reviewer, error) {
	opts = opts.withDefaults()
	r := &Reviewer{client: client, opts: opts, now: time.Now, inflight: map[key]*call{}}
	if _, err := rand.Read(r.secret[:]); err != nil {
		return nil, err
	}
	for _, a := range opts.Audiences {
		r.audKey = binary.AppendUvarint(r.audKey, uint64(len(a)))
		r.audKey = append(r.audKey, a...)
	}
	var err error
	if r.ok, err = simplelru.NewLRU[key, *entry](opts.Entries, nil); err != nil {
		return nil, err
	}
	if r.refused, err = simplelru.NewLRU[key, *entry](opts.FailureEntries, nil); err != nil {
		return nil, err
	}
	if r.sources, err = simplelru.NewLRU[string, *bucket](maxSources, nil); err != nil {
		return nil, err
	}
	return r, nil
}

// Stats count what Verify did.
type Stats struct {
	// Reviews made (TokenReviews created), Hits answered from the cache
	// or by joining a review under way, and Throttled refused for their
	// client host's budget.
	Reviews, Hits, Throttled int64
	// Cached verified and refused tokens.
	Cached, CachedRefused int
}

// Stats says what Verify did so far.
func (r *Reviewer) Stats() Stats {
	r.mu.Lock()
	cached, refused := r.ok.Len(), r.refused.Len()
	r.mu.Unlock()
	return Stats{Reviews: r.reviews.Load(), Hits: r.hits.Load(), Throttled: r.thrott.Load(), Cached: cached, CachedRefused: refused}
}

var _ identity.TokenVerifier = (*Reviewer)(nil)

// Verify implements identity.TokenVerifier. The client host whose budget
// a review of a token not cached is taken from is the gRPC peer's in ctx;
// callers without one share one budget.
func (r *Reviewer) Verify(ctx context.Context, token string) (identity.Identity, error) {
	k := r.key(token)
	r.mu.Lock()
	if id, err, ok := r.cached(k); ok {
		r.mu.Unlock()
		r.hits.Add(1)
		return answer(id, err)
	}
	c, joined := r.inflight[k]
	if !joined {
		host := source(ctx)
		if !r.take(host) {
			r.mu.Unlock()
			r.thrott.Add(1)
			return identity.Identity{}, r.throttled(host)
		}
		c = &call{done: make(chan struct{})}
		r.inflight[k] = c
		// The review is shared: it outlives the caller that started it
		// (ctx's values are kept, its end is not), and is bounded on its
		// own.
		go r.review(context.WithoutCancel(ctx), k, token, c)
	}
	r.mu.Unlock()
	if joined {
		r.hits.Add(1)
	}
	select {
	case <-c.done:
		return answer(c.id, c.err)
	case <-ctx.Done():
		// Not the review's failure (it goes on, and its answer is
		// cached): the client's stream or request ended.
		return identity.Identity{}, &identity.Refusal{Reason: "token_review_canceled", Err: fmt.Errorf("the client left before its token was reviewed: %w", context.Cause(ctx))}
	}
}

func answer(id identity.Identity, err *identity.Refusal) (identity.Identity, error) {
	if err != nil {
		return identity.Identity{}, err
	}
	return id, nil
}

// key is the cache's name of token: an HMAC, under a secret of this
// Reviewer's, of the audiences and the token, so the cache holds nothing
// a token could be recovered or confirmed from without the secret.
func (r *Reviewer) key(token string) key {
	h := hmac.New(sha256.New, r.secret[:])
	h.Write(r.audKey)
	h.Write([]byte{0})
	h.Write([]byte(token))
	var k key
	h.Sum(k[:0])
	return k
}

// cached is k's answer if it is cached and fresh; r.mu is held.
func (r *Reviewer) cached(k key) (identity.Identity, *identity.Refusal, bool) {
	now := r.now()
	for _, c := range []*simplelru.LRU[key, *entry]{r.ok, r.refused} {
		e, ok := c.Get(k)
		if !ok {
			continue
		}
		if !now.Before(e.expires) {
			c.Remove(k)
			continue
		}
		return e.id, e.err, true
	}
	return identity.Identity{}, nil, false
}

// take spends a review from host's budget, if it has one; r.mu is held.
func (r *Reviewer) take(host string) bool {
	if r.opts.SourceRate < 0 {
		return true
	}
	now := r.now()
	burst := float64(r.opts.SourceBurst)
	b, ok := r.sources.Get(host)
	if !ok {
		b = &bucket{tokens: burst, last: now}
		r.sources.Add(host, b)
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*r.opts.SourceRate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *Reviewer) throttled(host string) *identity.Refusal {
	who := "client host " + host
	if host == "" {
		who = "clients of unknown address"
	}
	return &identity.Refusal{Reason: "token_review_throttled", Err: fmt.Errorf(
		"%s presented more tokens not seen before than xdshard has the API server review for one host (%g a second, bursts of %d; a token verified in the last %s or refused in the last %s costs none): retry in a moment (istio-agent and Envoy retry on their own); if many genuine proxies reach xdshard from this one address (a NAT, a gateway), raise --token-review-per-source and --token-review-per-source-burst",
		who, r.opts.SourceRate, r.opts.SourceBurst, max(r.opts.SuccessTTL, 0), max(r.opts.FailureTTL, 0))}
}

// source is the client host of ctx's gRPC peer, "" without one.
func source(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	a := p.Addr.String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// review asks the API server about token, caches the answer and hands it
// to those waiting on c.
func (r *Reviewer) review(ctx context.Context, k key, token string, c *call) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	r.reviews.Add(1)
	id, err, ttl := r.ask(ctx, token)
	r.mu.Lock()
	if ttl > 0 {
		e := &entry{id: id, err: err, expires: r.now().Add(ttl)}
		if err == nil {
			r.ok.Add(k, e)
		} else {
			r.refused.Add(k, e)
		}
	}
	delete(r.inflight, k)
	r.mu.Unlock()
	c.id, c.err = id, err
	close(c.done)
}

// ask makes one TokenReview of token and says for how long its answer
// holds: a verified token until its exp, at most SuccessTTL; a refused
// one FailureTTL; a review that failed not at all (the next asks again).
func (r *Reviewer) ask(ctx context.Context, token string) (identity.Identity, *identity.Refusal, time.Duration) {
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: r.opts.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return identity.Identity{}, &identity.Refusal{Reason: "token_review_failed", Err: fmt.Errorf("the API server could not review the token (xdshard needs create on tokenreviews.authentication.k8s.io): %w", err)}, 0
	}
	refuse := func(format string, args ...any) (identity.Identity, *identity.Refusal, time.Duration) {
		return identity.Identity{}, &identity.Refusal{Reason: "bad_token", Err: fmt.Errorf(format, args...)}, r.opts.FailureTTL
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return refuse("the token is not valid for audience %v: %s", r.opts.Audiences, msg)
	}
	if len(tr.Status.Audiences) > 0 && !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(r.opts.Audiences, a) }) {
		return refuse("the token is for audiences %v, not %v", tr.Status.Audiences, r.opts.Audiences)
	}
	parts := strings.Split(tr.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return refuse("the token is %q's, not a service account's", tr.Status.User.Username)
	}
	id := identity.Identity{TrustDomain: r.opts.TrustDomain, Namespace: parts[2], ServiceAccount: parts[3], Via: "token"}
	ttl := r.opts.SuccessTTL
	if exp, ok := expiry(token); ok {
		// The review verified the token's signature, so its claims are
		// the issuer's: exp may be read without verifying it again.
		ttl = min(ttl, exp.Sub(r.now()))
	}
	return id, nil, ttl
}

// expiry reads a JWT's exp claim without verifying the token; false if
// it is not a JWT or has none (a legacy secret's token never expires).
func expiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	const far = 1 << 40 // seconds: beyond any TTL, and no overflow below
	exp := min(max(*claims.Exp, 0), far)
	return time.Unix(int64(exp), 0), true
}
