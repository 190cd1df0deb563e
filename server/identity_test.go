package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/identity/tokenreview"
	"github.com/xdshard/xdshard/internal/testpki"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

const serverSPIFFE = "spiffe://cluster.local/ns/istio-system/sa/xdshard"

func spiffe(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// tlsReplica is a replica serving TLS with a certificate of a test CA.
type tlsReplica struct {
	r     *server.Replica
	ca    *testpki.CA
	logs  *syncBuffer
	files identity.Files
}

func startTLSReplica(t *testing.T, tenants int, tweak func(*server.Config)) *tlsReplica {
	t.Helper()
	ca := testpki.NewCA(t, "mesh root")
	dir := t.TempDir()
	cert, key, caFile := ca.WriteServer(t, dir, testpki.Spec{SPIFFE: serverSPIFFE})
	files := identity.Files{Cert: cert, Key: key, ClientCA: caFile}
	certs, err := identity.LoadCerts(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := server.Config{Source: memory.New(fleet.Generate(fleet.Spec{Tenants: tenants, Services: 2, Endpoints: 1, Seed: 9})),
		XDSAddr: "127.0.0.1:0", MCPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", TLS: certs, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); r.Close() })
	synced(t, r.Synced())
	return &tlsReplica{r: r, ca: ca, logs: logs, files: files}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// dial connects over TLS trusting roots, presenting cert (if any) and
// token (if any).
func dialTLS(t *testing.T, addr string, roots *testpki.CA, cert *tls.Certificate, token string) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// firstResponse opens a SotW stream as a node of namespace ns (id and
// metadata; meta overrides), asks for typeURL and returns the first
// response, or the stream's error.
func firstResponse(conn *grpc.ClientConn, ns string, meta map[string]any, typeURL string, names ...string) (*discovery.DiscoveryResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]any{"NAMESPACE": ns}
	for k, v := range meta {
		m[k] = v
	}
	md, _ := structpb.NewStruct(m)
	node := &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.1~p.%s~%s.svc.cluster.local", ns, ns), Metadata: md}
	if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
		// The server may have ended the stream already (it refuses before
		// reading): its status comes with Recv.
		_, err = s.Recv()
		return nil, err
	}
	return s.Recv()
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

// TestTLSIdentityDecidesTenant: over TLS, a proxy's tenant follows the
// namespace its certificate proves, not what its node claims; a
// certificate of namespace A claiming B, no credentials, a certificate
// of another CA, an expired one and one without a SPIFFE identity are
// refused, each with its own reason in the metrics and the log; MCP is
// served on its own port only, over server-side TLS, to a client without
// a certificate (istiod has none to give); a debug caller sees
// only its own namespace's proxies; and a rotated certificate and CA are
// picked up from their files.
func TestTLSIdentityDecidesTenant(t *testing.T) {
	e := startTLSReplica(t, 3, nil)
	a, b := fleet.Tenant(0), fleet.Tenant(1)
	certA := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(a, "app")})
	conn := dialTLS(t, e.r.XDSAddr(), e.ca, &certA, "")

	resp, err := firstResponse(conn, a, nil, clusterType)
	if err != nil {
		t.Fatalf("a certificate of %s claiming %s: %v", a, a, err)
	}
	if raw, _ := proto.Marshal(resp); bytes.Contains(raw, []byte(b)) || !bytes.Contains(raw, []byte(a)) {
		t.Fatalf("the clusters of %s's proxy are not %s's alone", a, a)
	}
	_, err = firstResponse(conn, b, nil, clusterType)
	wantCode(t, "a certificate of "+a+" claiming "+b, err, codes.PermissionDenied)
	_, err = firstResponse(conn, a, map[string]any{"NAMESPACE": b}, clusterType)
	wantCode(t, "a certificate of "+a+" whose node ID says "+a+" and metadata "+b, err, codes.PermissionDenied)

	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, nil, ""), a, nil, clusterType)
	wantCode(t, "no certificate and no token", err, codes.Unauthenticated)

	other := testpki.NewCA(t, "another root")
	wrong := other.TLS(t, testpki.Spec{SPIFFE: spiffe(a, "app")})
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &wrong, ""), a, nil, clusterType)
	wantCode(t, "a certificate of another CA", err, codes.Unavailable)

	expired := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(a, "app"), NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &expired, ""), a, nil, clusterType)
	wantCode(t, "an expired certificate", err, codes.Unavailable)

	anonymous := e.ca.TLS(t, testpki.Spec{})
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &anonymous, ""), a, nil, clusterType)
	wantCode(t, "a certificate without a SPIFFE identity", err, codes.Unauthenticated)

	// MCP: refused on the proxies' port whoever asks, istiod's identity
	// included; served on the MCP port over server-side TLS to a client
	// that presents no certificate, as istiod dials its config source
	// (tlsSettings mode SIMPLE: the server's certificate checked against
	// the CA, nothing presented).
	const pa = "security.istio.io/v1/PeerAuthentication"
	api := map[string]any{"GENERATOR": "api", "ISTIO_REVISION": "default"}
	istiod := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe("istio-system", "istiod")})
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &istiod, ""), "istio-system", api, pa)
	wantCode(t, "istiod's identity reading MCP on the proxies' port", err, codes.PermissionDenied)
	_, err = firstResponse(conn, a, api, pa)
	wantCode(t, "a proxy's identity reading MCP on the proxies' port", err, codes.PermissionDenied)
	if counterWith(t, e.r, "xdshard_refused_requests_total", "mcp_wrong_port") != 2 {
		t.Fatal("the refusals were not counted as mcp_wrong_port")
	}
	if resp, err := firstResponse(dialTLS(t, e.r.MCPAddr(), e.ca, nil, ""), "istio-system", api, pa); err != nil || len(resp.Resources) == 0 {
		t.Fatalf("istiod without a certificate reading MCP on the MCP port over TLS: %v (%d resources)", err, len(resp.GetResources()))
	}
	_, err = firstResponse(dialTLS(t, e.r.MCPAddr(), e.ca, &certA, ""), a, nil, clusterType)
	wantCode(t, "a proxy on the MCP port", err, codes.PermissionDenied)

	// Debug: a caller of namespace a that claims istio-system sees a's
	// proxies only.
	certB := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(b, "app")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs, err := discovery.NewAggregatedDiscoveryServiceClient(dialTLS(t, e.r.XDSAddr(), e.ca, &certB, "")).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": b})
	if err := bs.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "sidecar~10.0.0.2~q." + b + "~" + b + ".svc.cluster.local", Metadata: md}, TypeUrl: clusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); err != nil {
		t.Fatal(err)
	}
	syncz, err := firstResponse(conn, "istio-system", map[string]any{"GENERATOR": "event"}, "istio.io/debug/syncz")
	if err != nil {
		t.Fatalf("syncz: %v", err)
	}
	if raw, _ := proto.Marshal(syncz); bytes.Contains(raw, []byte(b)) {
		t.Fatalf("a debug caller of %s, claiming istio-system, saw %s's proxy", a, b)
	}

	// Each refusal has its own reason, counted and logged.
	for _, reason := range []string{"claims_other_namespace", "no_credentials", "no_spiffe_id", "mcp_wrong_port"} {
		if counterWith(t, e.r, "xdshard_refused_requests_total", reason) == 0 {
			t.Errorf("no refusal counted with reason %s", reason)
		}
	}
	for _, reason := range []string{"unknown_authority", "expired_certificate"} {
		if counterWith(t, e.r, "xdshard_refused_handshakes_total", reason) == 0 {
			t.Errorf("no refused handshake counted with reason %s", reason)
		}
	}
	for _, reason := range []string{"claims_other_namespace", "no_credentials", "no_spiffe_id", "mcp_wrong_port", "unknown_authority", "expired_certificate"} {
		if e.logs.count("reason="+reason) == 0 {
			t.Errorf("no log line with reason=%s", reason)
		}
	}

	// Rotation: a new certificate from a new CA, written in place, is
	// served within the reload period; the old CA's clients are refused.
	next := testpki.NewCA(t, "next root")
	c2, k2 := next.Issue(t, testpki.Spec{SPIFFE: serverSPIFFE})
	for path, data := range map[string][]byte{e.files.Cert: c2, e.files.Key: k2, e.files.ClientCA: next.PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certNext := next.TLS(t, testpki.Spec{SPIFFE: spiffe(a, "app")})
	eventually(t, "the rotated certificate and CA served", func() bool {
		_, err := firstResponse(dialTLS(t, e.r.XDSAddr(), next, &certNext, ""), a, nil, clusterType)
		return err == nil
	})
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &certA, ""), a, nil, clusterType)
	wantCode(t, "a client of the replaced CA after rotation", err, codes.Unavailable)
}

// TestAdminNeedsIdentityBeyondLoopback: the admin port asks for an
// identity on the admin readers' list for its debug pages, keeps probes
// and metrics open, and serves pprof only when told to.
func TestAdminNeedsIdentityBeyondLoopback(t *testing.T) {
	e := startTLSReplica(t, 1, func(c *server.Config) { c.AdminRequireAuth = true })
	get := func(cert *tls.Certificate, path string) int {
		cfg := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := client.Get("https://" + e.r.AdminAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ops := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe("istio-system", "ops")})
	app := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(fleet.Tenant(0), "app")})
	for _, c := range []struct {
		cert *tls.Certificate
		path string
		want int
	}{
		{nil, "/readyz", 200}, {nil, "/metrics", 200},
		{nil, "/debug/syncz", 401}, {&app, "/debug/syncz", 403}, {&ops, "/debug/syncz", 200},
		{&ops, "/debug/tenantz", 200}, {&ops, "/debug/pprof/", 404},
	} {
		if got := get(c.cert, c.path); got != c.want {
			t.Errorf("GET %s with %v: %d, want %d", c.path, c.cert != nil, got, c.want)
		}
	}
}

// TestNoByteOfAnotherTenant is a wire-level property test: many clients
// with random identities, random claims (their own namespace or
// another's), SotW or delta, asking for random types and for resource
// names of other tenants; a client whose claim differs from its identity
// is refused, and no response to any client holds a byte naming a
// tenant other than its own.
func TestNoByteOfAnotherTenant(t *testing.T) {
	const tenants = 4
	e := startTLSReplica(t, tenants, nil)
	rng := rand.New(rand.NewPCG(7, 11))
	types := []string{clusterType, endpointType, listenerType, routeType}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 48; i++ {
		own := rng.IntN(tenants)
		claim := own
		if rng.IntN(2) == 0 {
			claim = rng.IntN(tenants)
		}
		victim := (own + 1 + rng.IntN(tenants-1)) % tenants
		cert := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(fleet.Tenant(own), fmt.Sprint("sa", i))})
		conn := dialTLS(t, e.r.XDSAddr(), e.ca, &cert, "")
		typ := types[rng.IntN(len(types))]
		names := []string{
			fmt.Sprintf("outbound|8080||svc-00.%s.svc.cluster.local", fleet.Tenant(victim)),
			fmt.Sprintf("svc-01.%s.svc.cluster.local:8080", fleet.Tenant(victim)),
			"8080", "*",
		}[:1+rng.IntN(4)]
		delta := rng.IntN(2) == 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, err := readAll(conn, fleet.Tenant(claim), typ, names, delta)
			// A server may echo a name the client itself asked for (a
			// delta removal of a name it does not have): no other
			// tenant's data. Everything else is checked.
			for _, n := range names {
				raw = bytes.ReplaceAll(raw, []byte(n), nil)
			}
			switch {
			case claim != own && status.Code(err) != codes.PermissionDenied:
				errs <- fmt.Errorf("client %d of %s claiming %s: %v, want PermissionDenied", i, fleet.Tenant(own), fleet.Tenant(claim), err)
			case claim == own && err != nil:
				errs <- fmt.Errorf("client %d of %s: %v", i, fleet.Tenant(own), err)
			}
			for k := 0; k < tenants; k++ {
				if k != own && bytes.Contains(raw, []byte(fleet.Tenant(k))) {
					errs <- fmt.Errorf("client %d of %s (claiming %s, %s %v) received bytes naming %s", i, fleet.Tenant(own), fleet.Tenant(claim), typ, names, fleet.Tenant(k))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// readAll streams as a node of ns, asking for typ and names, until 300 ms
// after its first answer (a response or the stream's end; 5 s at most),
// and returns every response's bytes; the error is the stream's, if it
// ended before.
func readAll(conn *grpc.ClientConn, ns, typ string, names []string, delta bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var once sync.Once
	answered := func() { once.Do(func() { time.AfterFunc(300*time.Millisecond, cancel) }) }
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ns})
	node := &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.1~p.%s~%s.svc.cluster.local", ns, ns), Metadata: md}
	client := discovery.NewAggregatedDiscoveryServiceClient(conn)
	var out []byte
	var recv func() (proto.Message, error)
	if delta {
		s, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResourceNamesSubscribe: names}); err != nil {
			_, err = s.Recv()
			return nil, err
		}
		recv = func() (proto.Message, error) { return s.Recv() }
	} else {
		s, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
			_, err = s.Recv()
			return nil, err
		}
		recv = func() (proto.Message, error) { return s.Recv() }
	}
	for {
		m, err := recv()
		answered()
		if err != nil {
			// The time is up: the client's deadline or cancel, or the
			// server ending the stream on it (EOF).
			if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		b, _ := proto.Marshal(m)
		out = append(out, b...)
	}
}

const (
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// TestServiceAccountTokenBindsNamespace: as istiod accepts istio-agent,
// a client without a certificate presents a service-account token for
// audience istio-ca, verified by the real API server's TokenReview; the
// token of namespace A binds the stream to A's tenant, a claim of another
// namespace is refused, and a token for another audience or a forged one
// is refused as bad_token.
func TestServiceAccountTokenBindsNamespace(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := fleet.Tenant(0), fleet.Tenant(1)
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+a+"}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: "+a+"}\n"); err != nil {
		t.Fatal(err)
	}
	reviewer, err := tokenreview.New(c.REST(), nil, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	e := startTLSReplica(t, 2, func(cfg *server.Config) { cfg.Tokens = reviewer })
	client, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	token := func(audience string) string {
		exp := int64(600)
		tr, err := client.CoreV1().ServiceAccounts(a).CreateToken(ctx, "app", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	good := token("istio-ca")
	conn := dialTLS(t, e.r.XDSAddr(), e.ca, nil, good)
	resp, err := firstResponse(conn, a, nil, clusterType)
	if err != nil {
		t.Fatalf("a token of %s claiming %s: %v", a, a, err)
	}
	if raw, _ := proto.Marshal(resp); bytes.Contains(raw, []byte(b)) {
		t.Fatalf("%s's token received %s's clusters", a, b)
	}
	_, err = firstResponse(conn, b, nil, clusterType)
	wantCode(t, "a token of "+a+" claiming "+b, err, codes.PermissionDenied)
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, nil, token("some-other-audience")), a, nil, clusterType)
	wantCode(t, "a token for another audience", err, codes.Unauthenticated)
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, nil, good[:len(good)-4]+"AAAA"), a, nil, clusterType)
	wantCode(t, "a forged token", err, codes.Unauthenticated)
	if n := counterWith(t, e.r, "xdshard_refused_requests_total", "bad_token"); n != 2 {
		t.Fatalf("%v refusals counted as bad_token, want 2 (audience, forgery)", n)
	}
}

// TestConnectionsAreBounded: past MaxConnections, a new connection is
// closed as soon as it is accepted and counted; once one closes, a new
// one is served.
func TestConnectionsAreBounded(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 1, Services: 1, Endpoints: 1, Seed: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := server.Start(ctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", MaxConnections: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	synced(t, r.Synced())
	dial := func() (*grpc.ClientConn, error) {
		conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = firstResponse(conn, fleet.Tenant(0), nil, clusterType)
		return conn, err
	}
	var open []*grpc.ClientConn
	for i := 0; i < 3; i++ {
		conn, err := dial()
		if err != nil {
			t.Fatalf("connection %d of 3: %v", i+1, err)
		}
		open = append(open, conn)
	}
	extra, err := dial()
	wantCode(t, "a fourth connection", err, codes.Unavailable)
	extra.Close()
	if counterNamed(t, r, "xdshard_refused_connections_total") < 1 {
		t.Fatal("the refused connection was not counted")
	}
	open[0].Close()
	eventually(t, "a new connection served once one closed", func() bool {
		conn, err := dial()
		if conn != nil {
			defer conn.Close()
		}
		return err == nil
	})
	for _, c := range open[1:] {
		c.Close()
	}
}

// TestPeersProveTheyAreReplicas: with TLS, replicas fetch each other's
// tenants over mTLS (a proxy on the replica that does not own its tenant
// gets it), and a client of another identity is refused on the peer port
// even when it speaks as a peer.
func TestPeersProveTheyAreReplicas(t *testing.T) {
	ca := testpki.NewCA(t, "mesh root")
	objs := fleet.Generate(fleet.Spec{Tenants: 4, Services: 2, Endpoints: 1, Seed: 8})
	addrs := freeAddrs(t, 2)
	peers := []sharding.Member{{ID: "r0", Addr: addrs[0]}, {ID: "r1", Addr: addrs[1]}}
	var replicas []*server.Replica
	for i := range peers {
		dir := t.TempDir()
		cert, key, caFile := ca.WriteServer(t, dir, testpki.Spec{SPIFFE: serverSPIFFE})
		certs, err := identity.LoadCerts(identity.Files{Cert: cert, Key: key, ClientCA: caFile}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(ctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", TLS: certs,
			ReplicaID: peers[i].ID, PeerAddr: peers[i].Addr, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); r.Close() })
		synced(t, r.Synced())
		replicas = append(replicas, r)
	}
	var tenant string
	for i := 0; i < 4 && tenant == ""; i++ {
		if replicas[0].Owner(fleet.Tenant(i)) == "r1" {
			tenant = fleet.Tenant(i)
		}
	}
	if tenant == "" {
		t.Fatal("r1 owns no tenant")
	}
	app := ca.TLS(t, testpki.Spec{SPIFFE: spiffe(tenant, "app")})
	if _, err := firstResponse(dialTLS(t, replicas[0].XDSAddr(), ca, &app, ""), tenant, nil, clusterType); err != nil {
		t.Fatalf("a proxy of %s on r0, which fetches it from r1 over mTLS: %v", tenant, err)
	}
	// An application's certificate speaking as a peer on r1's peer port.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(dialTLS(t, peers[1].Addr, ca, &app, "")).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"TENANT": tenant})
	_ = s.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: sharding.PeerNodePrefix + "intruder", Metadata: md}, TypeUrl: "type.googleapis.com/xdshard.peer.v1.SnapshotResource", ResourceNamesSubscribe: []string{"*"}})
	_, err = s.Recv()
	wantCode(t, "an application's identity on the peer port", err, codes.PermissionDenied)
	if counterWith(t, replicas[1], "xdshard_refused_requests_total", "peer_not_allowed") != 1 {
		t.Fatal("the intruder was not counted as peer_not_allowed")
	}
}

// TestDebugPagesFollowAdminReaders: istio.io/debug on the xDS port shows
// every tenant, so a proven caller must be one of --admin-readers, as on
// the admin port: the system namespace's identities by default, only the
// listed ones when the list is set.
func TestDebugPagesFollowAdminReaders(t *testing.T) {
	event := map[string]any{"GENERATOR": "event"}
	page := func(e *tlsReplica, sa string) error {
		cert := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe("istio-system", sa)})
		_, err := firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &cert, ""), "istio-system", event, "istio.io/debug", "tenantz")
		return err
	}
	byDefault := startTLSReplica(t, 1, nil)
	if err := page(byDefault, "anyone"); err != nil {
		t.Fatalf("an istio-system identity reading istio.io/debug by default: %v", err)
	}
	listed := startTLSReplica(t, 1, func(c *server.Config) { c.AdminReaders = identity.AllowList{"istio-system/ops"} })
	if err := page(listed, "ops"); err != nil {
		t.Fatalf("an admin reader reading istio.io/debug: %v", err)
	}
	wantCode(t, "an identity off --admin-readers reading istio.io/debug", page(listed, "anyone"), codes.PermissionDenied)
	if counterWith(t, listed.r, "xdshard_refused_requests_total", "debug_not_allowed") != 1 {
		t.Fatal("the refusal was not counted as debug_not_allowed")
	}
}

// TestHandshakesDoNotTakeConnections: --max-connections counts
// connections whose TLS handshake completed. A host that opens TCP
// connections and never handshakes holds only its share of the pending
// handshakes (64; the rest are refused as handshakes), not the replica's
// connections: clients of other hosts still connect, up to the bound.
func TestHandshakesDoNotTakeConnections(t *testing.T) {
	e := startTLSReplica(t, 1, func(c *server.Config) { c.MaxConnections = 3 })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	for i := 0; i < 70; i++ {
		c, err := d.Dial("tcp", e.r.XDSAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	eventually(t, "the handshakes past the host's share refused", func() bool {
		return counterWith(t, e.r, "xdshard_refused_connections_total", "handshakes") >= 6
	})
	cert := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(fleet.Tenant(0), "app")})
	for i := 0; i < 3; i++ {
		if _, err := firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &cert, ""), fleet.Tenant(0), nil, clusterType); err != nil {
			t.Fatalf("client %d of 3 beside 70 connections that never handshake: %v", i+1, err)
		}
	}
	_, err := firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &cert, ""), fleet.Tenant(0), nil, clusterType)
	wantCode(t, "a fourth established connection", err, codes.Unavailable)
	if counterWith(t, e.r, "xdshard_refused_connections_total", "too_many") < 1 {
		t.Fatal("the fourth connection was not counted as too_many")
	}
}
