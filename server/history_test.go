package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/internal/testpki"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// TestRollbackOverRealStreams: a rollback through the admin port brings
// a tenant's proxies back to an earlier version at once and pins it; a
// build meanwhile is held (the proxies keep the pinned version, status
// says one newer version waits); unpinning delivers the newest; and a
// write call is refused without POST.
func TestRollbackOverRealStreams(t *testing.T) {
	src := memory.New(fleet.Generate(fleet.Spec{Tenants: 2, Services: 2, Endpoints: 1, Seed: 4}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, conn := startPlain(t, server.Config{Source: src, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	tenant := fleet.Tenant(0)
	p := proxy.New(tenant, "p0", true)
	go func() { _ = p.Run(ctx, conn) }()
	synced(t, p.Synced())
	v1 := p.Latest(proxy.EDS).Version
	v1Tenant := r.Store().Current(tenant).Version

	change := func(gen int) {
		if err := src.Apply(ctx, fleet.ScaleEndpoints(0, 0, 2, gen)); err != nil {
			t.Fatal(err)
		}
	}
	change(1)
	eventually(t, "the first change on the proxy", func() bool { return p.Latest(proxy.EDS).Version != v1 })
	v2 := p.Latest(proxy.EDS).Version

	post := func(path string) (int, string) {
		resp, err := http.Post("http://"+r.AdminAddr()+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/debug/rollback?tenant=" + tenant); code != 200 || !strings.Contains(body, v1Tenant) {
		t.Fatalf("rollback: %d %s", code, body)
	}
	eventually(t, "the proxy back on the first version", func() bool { return p.Latest(proxy.EDS).Version == v1 })

	change(2)
	eventually(t, "the build held while pinned", func() bool {
		pinned, waiting := r.Store().Pinned(tenant)
		return pinned && waiting == 2
	})
	// The held builds are published (waiting counts them) and the store
	// still serves the pinned version, which is all a push can send: no
	// need to wait and see that nothing comes.
	if got := r.Store().Current(tenant).Version; got != v1Tenant {
		t.Fatalf("the store serves %s while the tenant is pinned to %s", got, v1Tenant)
	}
	if got := p.Latest(proxy.EDS).Version; got != v1 {
		t.Fatalf("a build reached the proxy while its tenant was pinned (%s, pinned %s)", got, v1)
	}
	resp, err := http.Get("http://" + r.AdminAddr() + "/debug/history?tenant=" + tenant)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Pinned   bool `json:"pinned"`
		Waiting  int  `json:"waiting"`
		Versions []struct {
			Version string `json:"version"`
			Serving bool   `json:"serving"`
		} `json:"versions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !h.Pinned || h.Waiting != 2 || len(h.Versions) != 3 || !h.Versions[0].Serving {
		t.Fatalf("history %+v: want pinned to the first of three versions, two waiting", h)
	}

	if code, _ := post("/debug/unpin?tenant=" + tenant); code != 200 {
		t.Fatalf("unpin: %d", code)
	}
	eventually(t, "the newest version on the proxy after unpin", func() bool {
		v := p.Latest(proxy.EDS).Version
		return v != v1 && v != v2
	})
	if code, body := post("/debug/rollback?tenant=" + tenant + "&to=nosuchversion"); code != http.StatusConflict || !strings.Contains(body, "not kept") {
		t.Fatalf("rollback to an unknown version: %d %s", code, body)
	}
	resp, err = http.Get("http://" + r.AdminAddr() + "/debug/rollback?tenant=" + tenant)
	if err != nil {
		t.Fatalf("a GET of a write call: %v", err)
	}
	resp.Body.Close() // an unread body holds its connection (goleak found it)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("a GET of a write call: %d, want 405", resp.StatusCode)
	}
}

// TestInternalDebugPages: `istioctl x internal-debug PAGE` asks the xDS
// port for type istio.io/debug naming the page; the answer is the admin
// page's body. Over TLS only the system namespace's identities may read
// them (they show every tenant).
func TestInternalDebugPages(t *testing.T) {
	e := startTLSReplica(t, 2, nil)
	ops := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe("istio-system", "ops")})
	app := e.ca.TLS(t, testpki.Spec{SPIFFE: spiffe(fleet.Tenant(0), "app")})
	event := map[string]any{"GENERATOR": "event"}
	resp, err := firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &ops, ""), "istio-system", event, "istio.io/debug", "tenantz", "syncz", "nosuch")
	if err != nil {
		t.Fatalf("internal-debug as istio-system: %v", err)
	}
	if len(resp.Resources) != 3 {
		t.Fatalf("%d resources for three pages", len(resp.Resources))
	}
	for i, want := range []string{`"tenant": "` + fleet.Tenant(1) + `"`, "[", "not served"} {
		a := resp.Resources[i]
		if a.TypeUrl != "istio.io/debug" || !strings.Contains(string(a.Value), want) {
			t.Errorf("page %d: %s %.200q, want istio.io/debug containing %q", i, a.TypeUrl, a.Value, want)
		}
	}
	_, err = firstResponse(dialTLS(t, e.r.XDSAddr(), e.ca, &app, ""), fleet.Tenant(0), event, "istio.io/debug", "tenantz")
	wantCode(t, "internal-debug as a tenant's identity", err, codes.PermissionDenied)
}

// TestPinSurvivesAnOwnerChange: two replicas sharding a tenant; its owner
// rolls it back (pinned), the other replica, fetching it, serves the
// pinned version and holds the pin; the owner goes away and the other
// adopts the tenant: it builds the tenant itself now, a change is made,
// and its proxy stays on the pinned version, until the pin is lifted
// there. Before, a pin lived in the owner's memory only: the adopter
// served its own newest build at once.
func TestPinSurvivesAnOwnerChange(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 1, Services: 2, Endpoints: 1, Seed: 9})
	addrs := freeAddrs(t, 2)
	peers := []sharding.Member{{ID: "r0", Addr: addrs[0]}, {ID: "r1", Addr: addrs[1]}}
	var replicas []*server.Replica
	var sources []*memory.Source
	var stops []context.CancelFunc
	for i := range peers {
		src := memory.New(objs)
		ctx, cancel := context.WithCancel(context.Background())
		r, err := server.Start(ctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
			ReplicaID: peers[i].ID, PeerAddr: peers[i].Addr, Peers: peers, History: 5})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); r.Close() })
		synced(t, r.Synced())
		replicas, sources, stops = append(replicas, r), append(sources, src), append(stops, cancel)
	}
	tenant := fleet.Tenant(0)
	owner, other := 0, 1
	if replicas[0].Owner(tenant) != "r0" {
		owner, other = 1, 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := grpc.NewClient(replicas[other].XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := proxy.New(tenant, "p0", true)
	go func() { _ = p.Run(ctx, conn) }()
	synced(t, p.Synced())
	v1 := p.Latest(proxy.EDS).Version
	v1Tenant := replicas[owner].Store().Current(tenant).Version
	live := sources
	change := func(gen int) {
		for _, src := range live {
			if err := src.Apply(ctx, fleet.ScaleEndpoints(0, 0, 2, gen)); err != nil {
				t.Fatal(err)
			}
		}
	}
	change(1)
	eventually(t, "the first change on the proxy of the other replica", func() bool { return p.Latest(proxy.EDS).Version != v1 })

	resp, err := http.Post("http://"+replicas[owner].AdminAddr()+"/debug/rollback?tenant="+tenant, "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("rollback on the owner: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, "the proxy of the other replica back on the first version, the pin held there", func() bool {
		pinned, _ := replicas[other].Store().Pinned(tenant)
		return p.Latest(proxy.EDS).Version == v1 && pinned
	})

	// The owner goes away; the other adopts the tenant and builds it.
	stops[owner]()
	replicas[owner].Close()
	live = sources[other : other+1] // the owner's pipeline is gone
	eventually(t, "the other replica building the tenant itself", func() bool {
		return replicas[other].Idle() && ownsHere(t, replicas[other], tenant)
	})
	latestBefore := func() string {
		h := replicas[other].Store().History(tenant)
		return h[len(h)-1].Version
	}
	before := latestBefore()
	change(2)
	eventually(t, "the change built and kept in the other replica's history", func() bool { return latestBefore() != before })
	if v := replicas[other].Store().Current(tenant).Version; v != v1Tenant {
		t.Fatalf("the adopting replica serves %s, want the pinned %s", v, v1Tenant)
	}
	if v := p.Latest(proxy.EDS).Version; v != v1 {
		t.Fatalf("the proxy moved off the pinned version to %s once its replica built the tenant", v)
	}
}

// ownsHere says whether r builds tenant now (its tenantz says "built here").
func ownsHere(t *testing.T, r *server.Replica, tenant string) bool {
	resp, err := http.Get("http://" + r.AdminAddr() + "/debug/tenantz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tz admin.Tenantz
	if err := json.NewDecoder(resp.Body).Decode(&tz); err != nil {
		t.Fatal(err)
	}
	for _, ts := range tz.Tenants {
		if ts.Tenant == tenant {
			return strings.HasPrefix(ts.Origin, "built here")
		}
	}
	return false
}
