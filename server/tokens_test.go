package server_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/identity/tokenreview"
	"github.com/xdshard/xdshard/internal/testpki"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/kube"
)

// TestTokenFailoverIsReviewed: 1,000 token-authenticated streams (200
// tokens of 20 service accounts in 4 tenants, over 10 connections from 10
// client hosts) are bound on one replica; it goes away and they are all
// opened again on a second replica, whose TokenReviews start from nothing,
// while another host sends it junk tokens in a loop. Every stream is bound
// again, none refused: none as token_review_failed (client-go's default
// 5 reviews a second made such a failover take minutes and refused most),
// none throttled, and the junk is refused, as bad_token or throttled. How
// long it took is logged, not asserted.
func TestTokenFailoverIsReviewed(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const (
		tenants  = 4
		accounts = 5  // per tenant
		perSA    = 10 // tokens per service account
		hosts    = 10 // client hosts, a connection each
		streams  = 1000
	)
	// The service accounts, and their tokens.
	var manifest strings.Builder
	type account struct{ ns, name string }
	var sas []account
	for i := range tenants {
		ns := fleet.Tenant(i)
		fmt.Fprintf(&manifest, "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n", ns)
		for range accounts {
			sa := account{ns, uniqueNS("proxy")}
			sas = append(sas, sa)
			fmt.Fprintf(&manifest, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n---\n", sa.name, ns)
		}
	}
	if err := c.Apply(ctx, manifest.String()); err != nil {
		t.Fatal(err)
	}
	mintRC := rest.CopyConfig(c.REST())
	mintRC.QPS, mintRC.Burst = 500, 500
	minter, err := kubernetes.NewForConfig(mintRC)
	if err != nil {
		t.Fatal(err)
	}
	type credential struct{ ns, token string }
	creds := make([]credential, len(sas)*perSA)
	var wg sync.WaitGroup
	errs := make(chan error, len(creds))
	for i := range creds {
		wg.Go(func() {
			sa := sas[i%len(sas)]
			exp := int64(3600)
			tr, err := minter.CoreV1().ServiceAccounts(sa.ns).CreateToken(ctx, sa.name, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
			if err != nil {
				errs <- err
				return
			}
			creds[i] = credential{sa.ns, tr.Status.Token}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("minting tokens: %v", err)
	}

	// Each replica has its own reviewer (a replica that takes over starts
	// with nothing cached), over the REST config serve gives it (from the
	// kubeconfig: client-go's default rate), whose TokenReviews are
	// counted.
	//
	// The API server may see a review twice: client-go sends a request
	// again that was answered 429 (the API server's priority and fairness
	// under load) or lost with its connection. answered counts the
	// requests that got any other answer (of the replica made last): one
	// per review at most.
	var answered *atomic.Int64
	replica := func() (*tlsReplica, *atomic.Int64) {
		var reviews, final atomic.Int64
		answered = &final
		rc, err := kube.RESTConfig(kube.Config{Kubeconfig: c.Kubeconfig})
		if err != nil {
			t.Fatal(err)
		}
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if !strings.HasSuffix(req.URL.Path, "/tokenreviews") {
					return rt.RoundTrip(req)
				}
				reviews.Add(1)
				resp, err := rt.RoundTrip(req)
				if err == nil && resp.StatusCode != http.StatusTooManyRequests {
					final.Add(1)
				}
				return resp, err
			})
		})
		reviewer, err := tokenreview.New(rc, nil, "cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		return startTLSReplica(t, tenants, func(cfg *server.Config) { cfg.Tokens = reviewer }), &reviews
	}

	// bindAll opens every stream on e, from the hosts, and returns them
	// (their cancels) once all are bound, or the errors of those refused.
	bindAll := func(e *tlsReplica) ([]context.CancelFunc, time.Duration, map[string]int) {
		conns := make([]*grpc.ClientConn, hosts)
		for h := range conns {
			conns[h] = dialFrom(t, e.r.XDSAddr(), e.ca, fmt.Sprintf("127.0.0.%d", 11+h))
		}
		start := time.Now()
		cancels := make([]context.CancelFunc, streams)
		var mu sync.Mutex
		refused := map[string]int{}
		var wg sync.WaitGroup
		for i := range streams {
			cred := creds[i%len(creds)]
			wg.Go(func() {
				sctx, cancel := context.WithCancel(ctx)
				cancels[i] = cancel
				bctx, stop := context.WithTimeout(sctx, 2*time.Minute)
				defer stop()
				if err := bind(bctx, sctx, conns[i%hosts], cred.ns, cred.token, i); err != nil {
					mu.Lock()
					refused[refusalKind(err)]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return cancels, time.Since(start), refused
	}

	a, aReviews := replica()
	cancels, took, refused := bindAll(a)
	if len(refused) > 0 {
		t.Fatalf("binding %d streams on the first replica: refused %v (%d TokenReviews, %v)", streams, refused, aReviews.Load(), took)
	}
	t.Logf("%d streams bound on the first replica in %v with %d TokenReviews", streams, took.Round(time.Millisecond), aReviews.Load())

	// The second replica, and a host sending it junk tokens meanwhile.
	b, bReviews := replica()
	junkCtx, stopJunk := context.WithCancel(ctx)
	junkConn := dialFrom(t, b.r.XDSAddr(), b.ca, "127.0.0.2")
	var junkMu sync.Mutex
	junk := map[string]int{}
	var junkWG sync.WaitGroup
	for range 32 {
		junkWG.Go(func() {
			for junkCtx.Err() == nil {
				sctx, cancel := context.WithTimeout(junkCtx, 10*time.Second)
				err := bind(sctx, sctx, junkConn, fleet.Tenant(0), junkToken(), 0)
				cancel()
				if junkCtx.Err() != nil {
					return
				}
				junkMu.Lock()
				junk[refusalKind(err)]++
				junkMu.Unlock()
			}
		})
	}
	t.Cleanup(func() { stopJunk(); junkWG.Wait() })
	// The failover comes once the junk source has spent its budget, and
	// goes on while it keeps sending.
	junkStart := time.Now()
	for {
		junkMu.Lock()
		n, seen := junk["token_review_throttled"], maps.Clone(junk)
		junkMu.Unlock()
		if n > 0 {
			break
		}
		if time.Since(junkStart) > time.Minute {
			t.Fatalf("the junk source was not throttled in a minute: %v, %d TokenReviews", seen, bReviews.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the junk source was throttled after %v (%d TokenReviews)", time.Since(junkStart).Round(time.Millisecond), bReviews.Load())
	junkMu.Lock()
	clear(junk)
	junkMu.Unlock()
	before := bReviews.Load()

	// The failover: the first replica goes, its streams end, and they are
	// opened again on the second.
	a.r.Close()
	for _, cancel := range cancels {
		cancel()
	}
	cancels, took, refused = bindAll(b)
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()
	stopJunk()
	junkWG.Wait()
	junkMu.Lock()
	defer junkMu.Unlock()
	t.Logf("failover: %d of %d streams bound again on the second replica in %v, with %d TokenReviews (the junk's included), while the junk source's streams were %v",
		streams-sum(refused), streams, took.Round(time.Millisecond), bReviews.Load()-before, junk)
	if len(refused) > 0 {
		t.Errorf("failover: %d of %d streams refused: %v", sum(refused), streams, refused)
	}
	if n := counterWith(t, b.r, "xdshard_refused_requests_total", "token_review_failed"); n != 0 {
		t.Errorf("the second replica refused %v streams as token_review_failed", n)
	}
	if junk["token_review_throttled"] == 0 {
		t.Errorf("the junk source was never throttled: %v", junk)
	}
	// What an operator sees: the replica's own count of its reviews, the
	// one the test's API server counted (requests sent again by client-go
	// aside: between those answered and all those sent).
	if n := counterNamed(t, b.r, "xdshard_token_reviews_total"); n < float64(answered.Load()) || n > float64(bReviews.Load()) {
		t.Errorf("xdshard_token_reviews_total is %v; the API server answered %d reviews from the second replica, of %d requests", n, answered.Load(), bReviews.Load())
	}
	if others := sum(junk) - junk["token_review_throttled"] - junk["bad_token"]; others > 0 {
		t.Errorf("junk streams refused otherwise than bad_token or token_review_throttled (or bound): %v", junk)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// dialFrom connects over TLS trusting roots, from the loopback address src.
func dialFrom(t *testing.T, addr string, roots *testpki.CA, src string) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// bind opens an ADS stream on conn (living as long as sctx) presenting
// token, as proxy n of namespace ns, and waits (until ctx ends) for its
// first cluster response.
func bind(ctx, sctx context.Context, conn *grpc.ClientConn, ns, token string, n int) error {
	sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+token)
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return err
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ns})
	node := &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.1~p-%d.%s~%s.svc.cluster.local", n, ns, ns), Metadata: md}
	got := make(chan error, 1)
	go func() {
		if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: clusterType}); err != nil {
			// The server may have ended the stream already: its status
			// comes with Recv.
			_, err = s.Recv()
			got <- err
			return
		}
		_, err := s.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no response in time: %w", ctx.Err())
	}
}

// refusalKind names what a stream's error says: the refusal's reason
// where its message tells it.
func refusalKind(err error) string {
	if err == nil {
		return "bound"
	}
	msg := err.Error()
	for _, k := range []struct{ reason, says string }{
		{"token_review_failed", "could not review the token"},
		{"token_review_throttled", "token_review_throttled"},
		{"token_review_throttled", "more tokens not seen before"},
		{"bad_token", "not valid for audience"},
	} {
		if strings.Contains(msg, k.says) {
			return k.reason
		}
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

// junkToken is a token shaped like a service account's, signed by nobody.
func junkToken() string {
	enc := base64.RawURLEncoding.EncodeToString
	sig := make([]byte, 256)
	rand.Read(sig)
	payload := fmt.Sprintf(`{"aud":["istio-ca"],"exp":%d,"iss":"https://kubernetes.default.svc.cluster.local","sub":"system:serviceaccount:%s:app"}`,
		time.Now().Add(time.Hour).Unix(), fleet.Tenant(0))
	return enc([]byte(`{"alg":"RS256","kid":"junk"}`)) + "." + enc([]byte(payload)) + "." + enc(sig)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
