package xds

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xdshard/xdshard/snapshot"
)

// partialMesh is tenant a's snapshot of len(eps) EDS clusters a-c1..: the
// i-th cluster's connect timeout is timeouts[i] seconds and its one
// endpoint 10.9.eps[i].i.
func partialMesh(t *testing.T, timeouts, eps []int) *snapshot.Snapshot {
	t.Helper()
	var cs, es []*snapshot.Resource
	for i := range eps {
		name := fmt.Sprintf("a-c%d", i+1)
		cs = append(cs, enc(t, name, &cluster.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(timeouts[i]) * time.Second),
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}}))
		es = append(es, enc(t, name, cla(name, fmt.Sprintf("10.9.%d.%d", eps[i], i))))
	}
	return snapshot.New("a", map[snapshot.View]map[string]*snapshot.Set{snapshot.ViewEnvoy: {
		snapshot.ClusterType:  snapshot.MustSet(snapshot.ClusterType, cs),
		snapshot.EndpointType: snapshot.MustSet(snapshot.EndpointType, es),
	}}, nil)
}

// held is what an Envoy-like client keeps of EDS: each
// ClusterLoadAssignment it was sent, until it unsubscribes from it.
type held map[string][]byte

func (h held) apply(r *discovery.DiscoveryResponse) {
	for i, n := range names(r.Resources) {
		h[n] = r.Resources[i].Value
	}
}

// TestPartialEDSCarriesOnlyChanges follows one Envoy-like client through
// the cases: an endpoint change sends that cluster's endpoints alone; a
// change after a NACK, a cluster change (warming) and a new subscription
// send every subscribed resource.
func TestPartialEDSCarriesOnlyChanges(t *testing.T) {
	e := newEnv(t)
	to, ep := []int{1, 1, 1}, []int{0, 0, 0}
	e.store.Publish(partialMesh(t, to, ep))
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	c.ack(c.recv())
	c.send(eds, "", "", "a-c1", "a-c2", "a-c3")
	r := c.recv()
	if len(r.Resources) != 3 {
		t.Fatalf("first EDS response: %d resources, want 3", len(r.Resources))
	}
	c.ack(r, "a-c1", "a-c2", "a-c3")

	ep[1] = 1
	s := partialMesh(t, to, ep)
	e.store.Publish(s)
	r = c.recv()
	if r.TypeUrl != eds || !slices.Equal(names(r.Resources), []string{"a-c2"}) || r.VersionInfo != s.Set(snapshot.ViewEnvoy, eds).Version {
		t.Fatalf("after a-c2's endpoints changed: %s %v version %s, want EDS [a-c2] version %s", r.TypeUrl, names(r.Resources), r.VersionInfo, s.Set(snapshot.ViewEnvoy, eds).Version)
	}
	c.send(eds, r.VersionInfo, r.Nonce, "a-c1", "a-c2", "a-c3")
	e.waitType(eds, func(st TypeStatus) bool { return st.Sync == "SYNCED" && st.AckedVersion == r.VersionInfo })

	// A NACK leaves what the client holds unknown: the next response is whole.
	ep[2] = 1
	e.store.Publish(partialMesh(t, to, ep))
	r = c.recv()
	if !slices.Equal(names(r.Resources), []string{"a-c3"}) {
		t.Fatalf("after a-c3 changed: %v, want [a-c3]", names(r.Resources))
	}
	c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResponseNonce: r.Nonce, ResourceNames: []string{"a-c1", "a-c2", "a-c3"}, ErrorDetail: &status.Status{Code: 3, Message: "rejected"}})
	e.waitType(eds, func(st TypeStatus) bool { return st.LastNACK != nil })
	ep[0] = 1
	e.store.Publish(partialMesh(t, to, ep))
	if r = c.recv(); len(r.Resources) != 3 {
		t.Fatalf("first response after a NACK: %v, want all three", names(r.Resources))
	}
	c.ack(r, "a-c1", "a-c2", "a-c3")
	e.waitType(eds, func(st TypeStatus) bool { return st.AckedVersion == r.VersionInfo })

	// A cluster changes and the endpoints too: CDS, then every endpoint,
	// so the warming cluster gets its own.
	to[0], ep[1] = 2, 2
	e.store.Publish(partialMesh(t, to, ep))
	if r = c.recv(); r.TypeUrl != cds {
		t.Fatalf("got %s first, want CDS", r.TypeUrl)
	}
	c.ack(r)
	if r = c.recv(); r.TypeUrl != eds || len(r.Resources) != 3 {
		t.Fatalf("EDS after CDS: %s %v, want all three", r.TypeUrl, names(r.Resources))
	}
	c.ack(r, "a-c1", "a-c2", "a-c3")
	e.waitType(eds, func(st TypeStatus) bool { return st.AckedVersion == r.VersionInfo })

	// A new subscription is answered whole; once it is ACKed, the next
	// change is partial again.
	c.send(eds, r.VersionInfo, r.Nonce, "a-c1", "a-c3")
	if r = c.recv(); !slices.Equal(names(r.Resources), []string{"a-c1", "a-c3"}) {
		t.Fatalf("after unsubscribing a-c2: %v", names(r.Resources))
	}
	c.ack(r, "a-c1", "a-c3")
	e.waitType(eds, func(st TypeStatus) bool { return st.AckedVersion == r.VersionInfo && st.SentNonce == r.Nonce })
	ep[1], ep[2] = 3, 3
	e.store.Publish(partialMesh(t, to, ep))
	if r = c.recv(); !slices.Equal(names(r.Resources), []string{"a-c3"}) {
		t.Fatalf("after a-c2 and a-c3 changed, subscribed to a-c1 and a-c3: %v, want [a-c3]", names(r.Resources))
	}
}

// TestFullSotWSendsEveryResource: with Options.FullSotW, EDS responses
// carry every subscribed resource, as go-control-plane's do.
func TestFullSotWSendsEveryResource(t *testing.T) {
	e := newEnvWith(t, Options{FullSotW: true, Resolver: ResolverFunc(func(ns string) (string, bool) { return ns, ns == "a" })}, nil)
	t.Cleanup(e.close)
	to, ep := []int{1, 1}, []int{0, 0}
	e.store.Publish(partialMesh(t, to, ep))
	c := e.sotw("a", nil)
	c.send(eds, "", "", "a-c1", "a-c2")
	c.ack(c.recv(), "a-c1", "a-c2")
	ep[1] = 1
	e.store.Publish(partialMesh(t, to, ep))
	if r := c.recv(); len(r.Resources) != 2 {
		t.Fatalf("with FullSotW: %v, want both", names(r.Resources))
	}
}

// TestPartialEDSKeepsTheClientWhole drives an Envoy-like client through
// random rounds (endpoint changes, cluster changes, new subscriptions,
// NACKs) and checks, after every response it accepted, that what it holds
// of each subscribed cluster is the current snapshot's: partial responses
// never leave it behind. It also checks some responses were partial, so it
// cannot pass by sending everything.
func TestPartialEDSKeepsTheClientWhole(t *testing.T) {
	const clusters, rounds = 6, 150
	rng := rand.New(rand.NewPCG(7, 12))
	e := newEnv(t)
	to, ep := make([]int, clusters), make([]int, clusters)
	for i := range to {
		to[i] = 1
	}
	cur := partialMesh(t, to, ep)
	e.store.Publish(cur)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	c.ack(c.recv())
	sub := []string{"a-c1", "a-c2", "a-c3", "a-c4"}
	c.send(eds, "", "", sub...)
	h := held{}
	last := c.recv()
	h.apply(last)
	c.ack(last, sub...)
	partials := 0

	check := func(round int) {
		t.Helper()
		set := cur.Set(snapshot.ViewEnvoy, eds)
		for _, n := range sub {
			if want := set.Get(n).Body.Value; !bytes.Equal(h[n], want) {
				t.Fatalf("round %d: the client holds a stale %s (subscribed to %v)", round, n, sub)
			}
		}
	}
	// answer ACKs r (or NACKs it, not applying it) and waits until the
	// server recorded the answer, so the next round starts from it.
	answer := func(r *discovery.DiscoveryResponse, nack bool) {
		t.Helper()
		if nack {
			c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: eds, ResponseNonce: r.Nonce, ResourceNames: sub, ErrorDetail: &status.Status{Code: 3, Message: "rejected"}})
		} else {
			h.apply(r)
			c.ack(r, sub...)
		}
		e.waitType(eds, func(st TypeStatus) bool { return st.SentNonce == r.Nonce && !st.Awaiting })
	}
	nacked := false
	for round := range rounds {
		if rng.IntN(5) == 0 { // a new subscription, sent as Envoy does with its last ACKed version
			var next []string
			for i := range clusters {
				if rng.IntN(2) == 0 {
					next = append(next, fmt.Sprintf("a-c%d", i+1))
				}
			}
			if len(next) == 0 || slices.Equal(next, sub) {
				continue
			}
			for n := range h {
				if !slices.Contains(next, n) {
					delete(h, n)
				}
			}
			sub = next
			c.send(eds, last.VersionInfo, last.Nonce, sub...)
			r := c.recv()
			if len(r.Resources) != len(sub) {
				t.Fatalf("round %d: a new subscription %v was answered with %v", round, sub, names(r.Resources))
			}
			last = r
			answer(r, false)
			nacked = false
			check(round)
			continue
		}
		clusterChange := rng.IntN(6) == 0
		if clusterChange {
			to[rng.IntN(clusters)]++
		}
		for range 1 + rng.IntN(2) {
			ep[rng.IntN(clusters)]++
		}
		prev := cur.Set(snapshot.ViewEnvoy, eds)
		cur = partialMesh(t, to, ep)
		e.store.Publish(cur)
		if clusterChange {
			r := c.recv()
			if r.TypeUrl != cds {
				t.Fatalf("round %d: %s before CDS", round, r.TypeUrl)
			}
			c.ack(r)
		}
		if cur.Set(snapshot.ViewEnvoy, eds).Version == prev.Version && !clusterChange {
			continue
		}
		r := c.recv()
		if r.TypeUrl != eds || r.VersionInfo != cur.Set(snapshot.ViewEnvoy, eds).Version {
			t.Fatalf("round %d: got %s version %s, want EDS version %s", round, r.TypeUrl, r.VersionInfo, cur.Set(snapshot.ViewEnvoy, eds).Version)
		}
		for _, n := range names(r.Resources) {
			if !slices.Contains(sub, n) {
				t.Fatalf("round %d: sent %s, not subscribed (%v)", round, n, sub)
			}
		}
		whole := len(r.Resources) == len(sub)
		if !whole {
			partials++
		}
		if (clusterChange || nacked) && !whole {
			t.Fatalf("round %d: a partial response %v after a cluster change (%v) or a NACK (%v)", round, names(r.Resources), clusterChange, nacked)
		}
		last = r
		nacked = rng.IntN(5) == 0
		answer(r, nacked)
		if !nacked {
			check(round)
		}
	}
	if partials < rounds/4 {
		t.Fatalf("only %d of %d rounds were answered partially", partials, rounds)
	}
	t.Logf("%d partial responses in %d rounds", partials, rounds)
}
