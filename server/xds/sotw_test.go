package xds

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/xdshard/xdshard/snapshot"
)

const (
	cds = snapshot.ClusterType
	eds = snapshot.EndpointType
	lds = snapshot.ListenerType
	rds = snapshot.RouteType
)

// TestEnvoyLikeSubscription subscribes as Envoy does (CDS, EDS for the
// clusters received, LDS, RDS for the listener's route) and follows a
// change: CDS comes before EDS, and EDS is re-sent after CDS changes even
// when the endpoints did not, so Envoy's cluster warming completes.
func TestEnvoyLikeSubscription(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	c := e.sotw("a", nil)

	c.send(cds, "", "")
	cr := c.recv()
	if cr.TypeUrl != cds || !slices.Equal(names(cr.Resources), []string{"a-c1", "a-c2"}) {
		t.Fatalf("CDS: got %s %v", cr.TypeUrl, names(cr.Resources))
	}
	c.ack(cr)
	c.send(eds, "", "", "a-c1", "a-c2")
	er := c.recv()
	if er.TypeUrl != eds || len(er.Resources) != 2 {
		t.Fatalf("EDS: got %s with %d", er.TypeUrl, len(er.Resources))
	}
	c.ack(er, "a-c1", "a-c2")
	c.send(lds, "", "")
	lr := c.recv()
	c.ack(lr)
	c.send(rds, "", "", "80")
	rr := c.recv()
	if rr.TypeUrl != rds || !slices.Equal(names(rr.Resources), []string{"80"}) {
		t.Fatalf("RDS: got %v", names(rr.Resources))
	}
	c.ack(rr, "80")
	c.none()

	// Clusters change (a new timeout), endpoints do not: CDS, then EDS again.
	s2 := e.mesh("a", 2, 1)
	got := []string{}
	for len(got) < 4 {
		r := c.recv()
		got = append(got, r.TypeUrl)
		switch r.TypeUrl {
		case eds:
			c.ack(r, "a-c1", "a-c2")
		case rds:
			c.ack(r, "80")
		default:
			c.ack(r)
		}
	}
	if want := []string{cds, eds, lds, rds}; !slices.Equal(got, want) {
		t.Fatalf("push order %v, want %v", got, want)
	}
	want := s2.Set(snapshot.ViewEnvoy, cds).Version
	e.waitType(cds, func(st TypeStatus) bool { return st.Sync == "SYNCED" && st.AckedVersion == want })
}

func TestEmptyAndUnbuiltTenant(t *testing.T) {
	e := newEnv(t)
	e.store.Publish(snapshot.Empty("a"))
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	if r := c.recv(); len(r.Resources) != 0 || r.VersionInfo == "" {
		t.Fatalf("empty snapshot: %d resources, version %q; want an empty answer at once, with a version", len(r.Resources), r.VersionInfo)
	}
	// Tenant b has no snapshot yet: wait for its first build, then answer.
	b := e.sotw("b", nil)
	b.send(cds, "", "")
	b.none()
	e.mesh("b", 1, 0)
	if r := b.recv(); !slices.Equal(names(r.Resources), []string{"b-c1"}) {
		t.Fatalf("after the first build: %v", names(r.Resources))
	}
}

func TestNACKIsRecordedAndNotRepushed(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	r := c.recv()
	c.sendReq(&discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: r.Nonce, ErrorDetail: &status.Status{Code: 3, Message: "bad cluster"}})
	c.none()
	st := e.waitType(cds, func(st TypeStatus) bool { return st.LastNACK != nil })
	if st.LastNACK.Message != "bad cluster" || st.Sync != "ERROR" {
		t.Fatalf("NACK not visible in status: %+v", st)
	}
	if st.AckedVersion == r.VersionInfo {
		t.Fatal("NACKed version recorded as ACKed")
	}
	e.mesh("a", 1, 1) // a new version is pushed
	if r2 := c.recv(); r2.VersionInfo == r.VersionInfo {
		t.Fatal("the NACKed version was pushed again")
	}
}

func TestStaleNonceIsIgnored(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	r1 := c.recv()
	e.mesh("a", 1, 1)
	c.ack(r1)
	r2 := c.recv()
	// A request answering r1 again (stale) changes nothing and gets nothing.
	c.send(cds, r1.VersionInfo, r1.Nonce, "a-c9")
	c.none()
	c.ack(r2)
	c.none()
}

func TestTimestampNonceOnFirstRequestIsInitial(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "2026-11-24T15:00:00Z") // istiod's first request
	if r := c.recv(); len(r.Resources) != 1 {
		t.Fatalf("first request with a timestamp nonce got %d resources", len(r.Resources))
	}
}

func TestWildcardUnsubscribeResubscribe(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 3, 0)
	c := e.sotw("a", nil)
	c.send(eds, "", "", "a-c1", "a-c2")
	r := c.recv()
	if !slices.Equal(names(r.Resources), []string{"a-c1", "a-c2"}) {
		t.Fatalf("named EDS: %v", names(r.Resources))
	}
	c.ack(r, "a-c1")
	r = c.recv() // unsubscribing a-c2 is answered with what remains
	c.ack(r, "a-c1", "a-c2")
	if r = c.recv(); !slices.Equal(names(r.Resources), []string{"a-c1", "a-c2"}) {
		t.Fatalf("resubscribe did not re-send a-c2: %v", names(r.Resources))
	}
	c.ack(r, "*")
	if r = c.recv(); len(r.Resources) != 3 {
		t.Fatalf("explicit wildcard: %d resources", len(r.Resources))
	}
}

// TestTenantIsolation: a client asking by name for another tenant's
// resources gets nothing of them.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	e.mesh("b", 1, 0)
	c := e.sotw("a", nil)
	c.send(eds, "", "", "b-c1", "a-c1")
	if r := c.recv(); !slices.Equal(names(r.Resources), []string{"a-c1"}) {
		t.Fatalf("tenant a received %v", names(r.Resources))
	}
}

func TestUnknownNamespaceIsRefused(t *testing.T) {
	e := newEnv(t)
	c := e.sotw("nope", nil)
	c.send(cds, "", "")
	if _, ok := <-c.resps; ok {
		t.Fatal("a node of an unknown namespace was served")
	}
}

// TestACKWakesTheSendLoopOnlyWhenDue checks that an ACK of the current
// version does not wake the stream's send loop (the receive side asks the
// send loop's own rule first), and that what must be sent still is: a
// version published while the last one is unACKed goes out on its ACK,
// and a subscription change goes out at once.
func TestACKWakesTheSendLoopOnlyWhenDue(t *testing.T) {
	var pushes atomic.Int64
	e := newEnvWith(t, Options{Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" })},
		func(s *Server) { s.testPushHook = func() { pushes.Add(1) } })
	t.Cleanup(e.close)
	e.mesh("a", 3, 0)
	c := e.sotw("a", nil)
	c.send(eds, "", "", "a-c1", "a-c2")
	r := c.recv()
	c.ack(r, "a-c1", "a-c2")
	e.waitType(eds, func(st TypeStatus) bool { return st.Sync == "SYNCED" })
	before := pushes.Load()
	for range 20 { // Envoy's ACKs repeat; each is a request, spaced so no two coalesce
		c.ack(r, "a-c1", "a-c2")
		time.Sleep(5 * time.Millisecond)
	}
	c.none()
	if n := pushes.Load() - before; n > 2 {
		t.Fatalf("20 ACKs of the current version woke the send loop %d times", n)
	}

	// Published while unACKed: sent once ACKed, the newest version.
	e.mesh("a", 3, 1)
	r1 := c.recv()
	e.mesh("a", 3, 2)
	c.none() // awaiting r1's ACK
	c.ack(r1, "a-c1", "a-c2")
	r2 := c.recv()
	if r2.VersionInfo == r1.VersionInfo || !strings.Contains(r2.Resources[0].String(), "10.1.2.") {
		t.Fatalf("after the ACK, version %s (%v), want generation 2's", r2.VersionInfo, r2.Resources[0])
	}
	// A new subscription in an ACK is answered at once.
	c.ack(r2, "a-c1", "a-c2", "a-c3")
	if r3 := c.recv(); len(r3.Resources) != 3 {
		t.Fatalf("the widened subscription got %d resources, want 3", len(r3.Resources))
	}
}

// TestReconnectNamingItsVersionsIsSentNothingAgain: a SotW client that
// opens a new stream naming the CDS and LDS versions it accepted (Envoy
// and grpc-go do) is not sent them again; named types (EDS, RDS) are, as
// their subscription may have grown. A later change reaches it, and a
// client naming an old version gets the current one at once.
func TestReconnectNamingItsVersionsIsSentNothingAgain(t *testing.T) {
	e := newEnv(t)
	s1 := e.mesh("a", 2, 0)
	cdsV, ldsV := s1.Set(snapshot.ViewEnvoy, cds).Version, s1.Set(snapshot.ViewEnvoy, lds).Version
	c := e.sotw("a", nil)
	c.send(cds, cdsV, "")
	c.send(lds, ldsV, "")
	c.send(eds, "", "", "a-c1", "a-c2")
	// EDS is answered (named); CDS and LDS are not sent again.
	if r := c.recv(); r.TypeUrl != eds || len(r.Resources) != 2 {
		t.Fatalf("first response %s with %d resources, want EDS with 2", r.TypeUrl, len(r.Resources))
	}
	if got := testutil.ToFloat64(e.srv.metrics.resumed.WithLabelValues("cds")) + testutil.ToFloat64(e.srv.metrics.resumed.WithLabelValues("lds")); got != 2 {
		t.Fatalf("xdshard_xds_resumed_total for CDS and LDS = %v, want 2", got)
	}
	e.waitType(cds, func(st TypeStatus) bool { return st.Sync == "SYNCED" && st.AckedVersion == cdsV })

	// A change: the new CDS reaches the resumed stream.
	s2 := e.mesh("a", 2, 1)
	for {
		r := c.recv()
		c.ack(r)
		if r.TypeUrl == cds {
			if r.VersionInfo != s2.Set(snapshot.ViewEnvoy, cds).Version || len(r.Resources) != 2 {
				t.Fatalf("CDS after the change: version %s with %d resources", r.VersionInfo, len(r.Resources))
			}
			break
		}
	}

	// A client naming a version that is not the current one is sent it.
	old := e.sotw("a", nil)
	old.send(cds, cdsV, "")
	if r := old.recv(); r.TypeUrl != cds || r.VersionInfo != s2.Set(snapshot.ViewEnvoy, cds).Version {
		t.Fatalf("a client naming an old version got %s %s", r.TypeUrl, r.VersionInfo)
	}
}

// TestReconnectBeforeTheTenantIsHereIsSentNothingAgain: a SotW client
// that names the CDS version it accepted on a new stream, to a replica
// that does not have its tenant's snapshot yet (it fetches a tenant when
// its first client of it arrives, which is when a failed-over proxy
// does), is not sent that version once the snapshot comes: the claim
// waits for the first push. It was sent again whole (the sharded
// Kubernetes test's "re-sent 10 resources", now and then). A client
// naming another version gets the snapshot's.
func TestReconnectBeforeTheTenantIsHereIsSentNothingAgain(t *testing.T) {
	e := newEnv(t)
	s1 := e.snapshot("a", 2, 0)
	cdsV := s1.Set(snapshot.ViewEnvoy, cds).Version
	c := e.sotw("a", nil)
	c.send(cds, cdsV, "")
	other := e.sotw("a", nil)
	other.send(cds, "some-other-version", "")
	c.settle(t) // the claims are recorded, with no snapshot to compare
	other.settle(t)
	e.store.Publish(s1)
	// A push after the snapshot came answers LDS; CDS, before it in
	// push order, would have come first.
	c.send(lds, "", "")
	if r := c.recv(); r.TypeUrl != lds {
		t.Fatalf("first response %s version %s, want LDS (CDS was claimed at the version the snapshot has)", r.TypeUrl, r.VersionInfo)
	}
	c.none()
	if r := other.recv(); r.TypeUrl != cds || r.VersionInfo != cdsV {
		t.Fatalf("the client naming another version got %s %s, want CDS %s", r.TypeUrl, r.VersionInfo, cdsV)
	}
	// A change reaches the resumed stream.
	s2 := e.mesh("a", 2, 1)
	if r := c.recv(); r.TypeUrl != cds || r.VersionInfo != s2.Set(snapshot.ViewEnvoy, cds).Version {
		t.Fatalf("after the change: %s %s", r.TypeUrl, r.VersionInfo)
	}
}
