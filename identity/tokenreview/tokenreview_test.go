package tokenreview

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/xdshard/xdshard/identity"
)

// clock is a time the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// apiServer is a fake API server's TokenReview: a token made by jwt is
// valid until its exp (by the test's clock) for audience istio-ca,
// anything else is not; it logs the tokens it reviews, and hold, when
// set, is called in each review first (to block it, or fail it).
type apiServer struct {
	clk  *clock
	mu   sync.Mutex
	log  []string
	hold func(token string) error
}

func (s *apiServer) reviews() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

func (s *apiServer) react(a k8stesting.Action) (bool, runtime.Object, error) {
	tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
	token := tr.Spec.Token
	s.mu.Lock()
	s.log = append(s.log, token)
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		if err := hold(token); err != nil {
			return true, nil, err
		}
	}
	out := tr.DeepCopy()
	claims, ok := parse(token)
	switch {
	case !ok:
		out.Status.Error = "invalid bearer token"
	case claims.Exp != 0 && !s.clk.Now().Before(time.Unix(claims.Exp, 0)):
		out.Status.Error = "invalid bearer token, token has expired"
	default:
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"},
			User: authenticationv1.UserInfo{Username: claims.Sub}}
	}
	return true, out, nil
}

type claims struct {
	Sub string `json:"sub"`
	Exp int64  `json:"exp,omitempty"`
}

// jwt is a token of namespace/sa (its exp, unless zero); n makes tokens
// of one service account differ.
func jwt(ns, sa string, exp time.Time, n int) string {
	c := claims{Sub: "system:serviceaccount:" + ns + ":" + sa}
	if !exp.IsZero() {
		c.Exp = exp.Unix()
	}
	b, _ := json.Marshal(c)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + "." + enc(fmt.Appendf(nil, "signature-%d", n))
}

func parse(token string) (claims, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || !strings.HasPrefix(string(must(base64.RawURLEncoding.DecodeString(parts[2]))), "signature-") {
		return claims{}, false
	}
	var c claims
	if json.Unmarshal(must(base64.RawURLEncoding.DecodeString(parts[1])), &c) != nil || c.Sub == "" {
		return claims{}, false
	}
	return c, true
}

func must(b []byte, _ error) []byte { return b }

// newTest is a Reviewer over a fake API server, on a clock that stands
// still until the test moves it.
func newTest(t *testing.T, opts Options) (*Reviewer, *apiServer, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	srv := &apiServer{clk: clk}
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", srv.react)
	r, err := NewForClient(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.now = clk.Now
	return r, srv, clk
}

// from is a context of a gRPC client at host.
func from(host string) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(host), Port: 40000}})
}

func reason(err error) string {
	var r *identity.Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	if err != nil {
		return "not a refusal: " + err.Error()
	}
	return ""
}

func TestReviewedOnceThenFromTheCache(t *testing.T) {
	r, srv, clk := newTest(t, Options{})
	tok := jwt("shop", "app", clk.Now().Add(time.Hour), 1)
	for i := range 10 {
		id, err := r.Verify(from("10.0.0.1"), tok)
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if want := (identity.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "app", Via: "token"}); id != want {
			t.Fatalf("verify %d: %+v, want %+v", i, id, want)
		}
		clk.Step(time.Second)
	}
	if n := len(srv.reviews()); n != 1 {
		t.Fatalf("%d reviews of one token verified 10 times, want 1", n)
	}
	if s := r.Stats(); s.Reviews != 1 || s.Hits != 9 || s.Cached != 1 {
		t.Fatalf("stats %+v, want 1 review, 9 hits, 1 cached", s)
	}
	// The key is keyed by the Reviewer's own secret, and by the
	// audiences.
	same, _, _ := newTest(t, Options{})
	if r.key(tok) == same.key(tok) {
		t.Fatal("two Reviewers name a token alike: the key is not keyed by their own secret")
	}
	other, _, _ := newTest(t, Options{Audiences: []string{"other"}})
	other.secret = r.secret
	if r.key(tok) == other.key(tok) {
		t.Fatal("a token is named alike for two audiences")
	}
}

func TestSuccessHoldsUntilTheTokensExpiry(t *testing.T) {
	r, srv, clk := newTest(t, Options{SuccessTTL: 5 * time.Minute})
	short := jwt("shop", "app", clk.Now().Add(30*time.Second), 1)
	if _, err := r.Verify(from("10.0.0.1"), short); err != nil {
		t.Fatal(err)
	}
	clk.Step(29 * time.Second)
	if _, err := r.Verify(from("10.0.0.1"), short); err != nil || len(srv.reviews()) != 1 {
		t.Fatalf("before its exp: %v, %d reviews, want the cached identity (1 review)", err, len(srv.reviews()))
	}
	clk.Step(2 * time.Second)
	_, err := r.Verify(from("10.0.0.1"), short)
	if reason(err) != "bad_token" || len(srv.reviews()) != 2 {
		t.Fatalf("past its exp: %v (%s), %d reviews, want it reviewed again and refused as bad_token", err, reason(err), len(srv.reviews()))
	}

	// A long-lived token, and one without exp: SuccessTTL bounds them.
	for i, exp := range []time.Time{clk.Now().Add(24 * time.Hour), {}} {
		before := len(srv.reviews())
		tok := jwt("shop", "app", exp, 10+i)
		if _, err := r.Verify(from("10.0.0.1"), tok); err != nil {
			t.Fatal(err)
		}
		clk.Step(5*time.Minute - time.Second)
		if _, err := r.Verify(from("10.0.0.1"), tok); err != nil || len(srv.reviews()) != before+1 {
			t.Fatalf("token %d within SuccessTTL: %v, %d reviews, want 1", i, err, len(srv.reviews())-before)
		}
		clk.Step(2 * time.Second)
		if _, err := r.Verify(from("10.0.0.1"), tok); err != nil || len(srv.reviews()) != before+2 {
			t.Fatalf("token %d past SuccessTTL: %v, %d reviews, want 2", i, err, len(srv.reviews())-before)
		}
	}
}

func TestRefusalHoldsForFailureTTL(t *testing.T) {
	r, srv, clk := newTest(t, Options{FailureTTL: 10 * time.Second})
	for i := range 20 {
		_, err := r.Verify(from("10.0.0.1"), "junk")
		if reason(err) != "bad_token" {
			t.Fatalf("junk %d: %v (%s), want bad_token", i, err, reason(err))
		}
	}
	if n := len(srv.reviews()); n != 1 {
		t.Fatalf("%d reviews of one junk token refused 20 times within FailureTTL, want 1", n)
	}
	clk.Step(10 * time.Second)
	if _, err := r.Verify(from("10.0.0.1"), "junk"); reason(err) != "bad_token" || len(srv.reviews()) != 2 {
		t.Fatalf("past FailureTTL: %v, %d reviews, want 2", err, len(srv.reviews()))
	}

	// A review that failed (the API server unreachable) is not an
	// answer: the next Verify asks again.
	tok := jwt("shop", "app", clk.Now().Add(time.Hour), 1)
	var failed atomic.Bool
	srv.hold = func(string) error {
		if failed.CompareAndSwap(false, true) {
			return errors.New("connection refused")
		}
		return nil
	}
	if _, err := r.Verify(from("10.0.0.1"), tok); reason(err) != "token_review_failed" {
		t.Fatalf("API server down: %v (%s), want token_review_failed", err, reason(err))
	}
	if _, err := r.Verify(from("10.0.0.1"), tok); err != nil || len(srv.reviews()) != 4 {
		t.Fatalf("API server back: %v, %d reviews, want the token reviewed again and verified (4)", err, len(srv.reviews()))
	}
}

func TestConcurrentVerifiesOfOneTokenShareOneReview(t *testing.T) {
	r, srv, clk := newTest(t, Options{SourceBurst: 1})
	release := make(chan struct{})
	srv.hold = func(string) error { <-release; return nil }
	tok := jwt("shop", "app", clk.Now().Add(time.Hour), 1)
	// The first caller leaves before the review ends: the others still
	// get its answer.
	first, leave := context.WithCancel(from("10.0.0.1"))
	firstErr := make(chan error, 1)
	go func() { _, err := r.Verify(first, tok); firstErr <- err }()
	for r.Stats().Reviews == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			id, err := r.Verify(from("10.0.0.1"), tok)
			if err == nil && id.Namespace != "shop" {
				err = fmt.Errorf("identity %+v", id)
			}
			errs <- err
		})
	}
	for r.Stats().Hits < 100 {
		time.Sleep(time.Millisecond)
	}
	leave()
	if err := <-firstErr; reason(err) != "token_review_canceled" || !strings.Contains(err.Error(), "left") {
		t.Fatalf("the caller that left: %v, want token_review_canceled", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(srv.reviews()); n != 1 {
		t.Fatalf("%d reviews for 101 concurrent Verify calls of one token, want 1", n)
	}
	// Joining cost the source nothing (its burst is 1, spent by the
	// first): and the answer is cached.
	if _, err := r.Verify(from("10.0.0.1"), tok); err != nil || len(srv.reviews()) != 1 {
		t.Fatalf("after: %v, %d reviews", err, len(srv.reviews()))
	}
}

func TestCacheIsBoundedAndJunkDoesNotEvict(t *testing.T) {
	r, srv, clk := newTest(t, Options{Entries: 3, FailureEntries: 5, SourceRate: -1})
	exp := clk.Now().Add(time.Hour)
	toks := []string{jwt("a", "app", exp, 1), jwt("b", "app", exp, 2), jwt("c", "app", exp, 3), jwt("d", "app", exp, 4)}
	verify := func(tok string, wantReviews int) {
		t.Helper()
		_, err := r.Verify(from("10.0.0.1"), tok)
		if strings.HasPrefix(tok, "junk") {
			if reason(err) != "bad_token" {
				t.Fatalf("%s: %v", tok, err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if n := len(srv.reviews()); n != wantReviews {
			t.Fatalf("after %.20s: %d reviews, want %d", tok, n, wantReviews)
		}
	}
	for i, tok := range toks[:3] {
		verify(tok, i+1)
	}
	for i := range 50 {
		verify(fmt.Sprintf("junk-%d", i), 4+i)
	}
	for _, tok := range toks[:3] {
		verify(tok, 53) // 50 junk tokens pushed no verified one out
	}
	if s := r.Stats(); s.Cached != 3 || s.CachedRefused != 5 {
		t.Fatalf("stats %+v, want 3 cached, 5 refused cached (the bounds)", s)
	}
	verify(toks[3], 54) // pushes out the least recently used, a
	verify(toks[2], 54)
	verify(toks[0], 55)
	verify("junk-49", 55) // the newest refusals are kept
	verify("junk-0", 56)
}

func TestOneSourcesJunkDoesNotStarveAnother(t *testing.T) {
	r, srv, clk := newTest(t, Options{SourceRate: 10, SourceBurst: 20})
	valid := jwt("shop", "app", clk.Now().Add(time.Hour), 1)
	var (
		mu       sync.Mutex
		refusals = map[string]int{}
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				_, err := r.Verify(from("10.0.0.66"), fmt.Sprintf("junk-%d", i))
				mu.Lock()
				refusals[reason(err)]++
				mu.Unlock()
			}
		})
	}
	bDone := make(chan error, 1)
	for i := range 1000 {
		next <- i
		if i == 100 {
			// The junk source is throttled by now; the other source's
			// token is reviewed at once.
			go func() {
				id, err := r.Verify(from("10.0.0.7"), valid)
				if err == nil && id.Namespace != "shop" {
					err = fmt.Errorf("identity %+v", id)
				}
				bDone <- err
			}()
		}
	}
	close(next)
	wg.Wait()
	if err := <-bDone; err != nil {
		t.Fatalf("the other source's valid token: %v", err)
	}
	if refusals["bad_token"] != 20 || refusals["token_review_throttled"] != 980 {
		t.Fatalf("the junk source's refusals %v, want 20 bad_token (its burst reviewed) and 980 token_review_throttled", refusals)
	}
	reviews := srv.reviews()
	if len(reviews) != 21 {
		t.Fatalf("%d reviews, want 21: the junk source's burst, and the valid token", len(reviews))
	}
	// The junk source's budget refills at its rate; the other source's
	// is its own.
	clk.Step(time.Second)
	n := 0
	for i := range 100 {
		if _, err := r.Verify(from("10.0.0.66"), fmt.Sprintf("junk-again-%d", i)); reason(err) == "bad_token" {
			n++
		}
	}
	if n != 10 {
		t.Fatalf("a second later the junk source had %d tokens reviewed, want 10 (its rate)", n)
	}
	_, err := r.Verify(from("10.0.0.66"), "junk-more")
	if reason(err) != "token_review_throttled" || !strings.Contains(err.Error(), "10.0.0.66") || !strings.Contains(err.Error(), "--token-review-per-source") {
		t.Fatalf("throttled: %v, want token_review_throttled naming the host and what to raise", err)
	}
	if _, err := r.Verify(from("10.0.0.7"), jwt("shop", "app", clk.Now().Add(time.Hour), 2)); err != nil {
		t.Fatalf("the other source's next token: %v", err)
	}
	// A cached token costs no budget: the throttled source's own verified
	// token is still taken.
	if _, err := r.Verify(from("10.0.0.66"), valid); err != nil {
		t.Fatalf("a cached token from the throttled source: %v", err)
	}
}

func TestSource(t *testing.T) {
	for _, c := range []struct {
		ctx  context.Context
		want string
	}{
		{context.Background(), ""},
		{from("10.1.2.3"), "10.1.2.3"},
		{from("fd00::1"), "fd00::1"},
		{peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{Name: "@sock", Net: "unix"}}), "@sock"},
	} {
		if got := source(c.ctx); got != c.want {
			t.Errorf("source: %q, want %q", got, c.want)
		}
	}
}

func TestExpiry(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, c := range []struct {
		token string
		want  int64
		ok    bool
	}{
		{"opaque", 0, false},
		{"a.b", 0, false},
		{"h." + enc(`{"exp":1800000000}`) + ".s", 1800000000, true},
		{"h." + enc(`{"exp":1800000000}`) + "==.s", 1800000000, true},
		{"h." + enc(`{"exp":1.8e9}`) + ".s", 1800000000, true},
		{"h." + enc(`{"sub":"x"}`) + ".s", 0, false},
		{"h." + enc(`{"exp":"soon"}`) + ".s", 0, false},
		{"h.!!!.s", 0, false},
		{"h." + enc(`{"exp":-5}`) + ".s", 0, true},
		{"h." + enc(`{"exp":1e300}`) + ".s", 1 << 40, true},
	} {
		got, ok := expiry(c.token)
		if ok != c.ok || (ok && got.Unix() != c.want) {
			t.Errorf("expiry(%q) = %v, %v; want %v, %v", c.token, got.Unix(), ok, c.want, c.ok)
		}
	}
}
