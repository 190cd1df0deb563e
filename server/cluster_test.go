package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// tenantz reads a replica's /debug/tenantz.
func (p *replicaProc) tenantz(t *testing.T) admin.Tenantz {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/debug/tenantz")
	if err != nil {
		t.Fatalf("tenantz of %s: %v", p.id, err)
	}
	defer resp.Body.Close()
	var tz admin.Tenantz
	if err := json.NewDecoder(resp.Body).Decode(&tz); err != nil {
		t.Fatalf("tenantz of %s: %v", p.id, err)
	}
	return tz
}

// owners says which live replica builds each tenant, as each reports it:
// tenant -> replica ID. A tenant two replicas claim fails the test.
func (d *deployment) owners() map[string]string {
	d.t.Helper()
	out := map[string]string{}
	for _, p := range d.live() {
		for _, ts := range p.tenantz(d.t).Tenants {
			if ts.Origin != "built here" {
				continue
			}
			if o, ok := out[ts.Tenant]; ok && o != p.id {
				return nil // mid-handover; the caller asks again
			}
			out[ts.Tenant] = p.id
		}
	}
	return out
}

// members says whether every live replica counts n members.
func (d *deployment) members(n int) bool {
	for _, p := range d.live() {
		if p.metric(d.t, "xdshard_members") != float64(n) {
			return false
		}
	}
	return true
}

// changedAll says whether every proxy of tenants (all, if nil) holds a
// version of typ other than the one in before.
func (d *deployment) changedAll(before map[*fleetProxy]map[string]string, typ string, tenants ...string) bool {
	for p, vs := range d.versions() {
		if len(tenants) > 0 && !slices.Contains(tenants, p.tenant) {
			continue
		}
		if old, ok := before[p]; ok && old[typ] == vs[typ] {
			return false
		}
	}
	return true
}

func (d *deployment) resent() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.proxies {
		_, r := p.Streams()
		n += r
	}
	return n
}

// settledBuilds waits until the deployment's build count stops moving
// and returns it.
func (d *deployment) settledBuilds() float64 {
	last := d.builds()
	for {
		time.Sleep(400 * time.Millisecond)
		n := d.builds()
		if n == last {
			return n
		}
		last = n
	}
}

// leaseDeployment applies a fleet of tenants (seed) to the real API
// server and starts three `xdshard serve` processes (IDs prefix0..2)
// sharding it by Leases of 3 s renewed every 500 ms, and waits until each
// counts three members. It returns the deployment and the processes'
// arguments, for more replicas like them.
func leaseDeployment(t *testing.T, ctx context.Context, c *kubetest.Cluster, prefix string, tenants int, seed uint64, extra ...string) (*deployment, []string) {
	t.Helper()
	leaseNS := uniqueNS("xdshard")
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+leaseNS+"}\n"); err != nil {
		t.Fatal(err)
	}
	applyParallel(t, ctx, c, fleet.Generate(fleet.Spec{Tenants: tenants, Services: 2, Endpoints: 1, Seed: seed}))
	args := append([]string{"--kubeconfig", c.Kubeconfig, "--lease-namespace", leaseNS, "--lease-duration", "3s", "--lease-renew", "500ms", "--rebalance-every", "500ms"}, extra...)
	d := &deployment{t: t}
	for i := 0; i < 3; i++ {
		d.procs = append(d.procs, startProc(t, fmt.Sprint(prefix, i), "", args...))
	}
	d.waitFor("three members on every replica", 20*time.Second, func() bool { return d.members(3) })
	return d, args
}

// TestShardedReplicasOverKubernetes runs three `xdshard serve` processes
// against one real kube-apiserver, sharding by Leases: proxies spread
// over them all get their tenant's config, with identical versions on
// every replica; a one-tenant change costs one build in the deployment
// and a mesh-wide change one per tenant; a fourth replica takes about a
// quarter of the tenants and its share of the streams, gradually; a
// replica killed with SIGKILL (idle, then in the middle of a push) loses
// no proxy for more than 5 s, re-sends nothing to a delta proxy whose
// versions were current, and a change made during the failover reaches
// every proxy; no proxy ever sees an empty or another tenant's config or a
// version go back.
func TestShardedReplicasOverKubernetes(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const tenants = 12
	d, args := leaseDeployment(t, ctx, c, "r", tenants, 11)
	defer d.close()
	d.everywhere(ctx, tenants)
	d.anomalies()

	// A one-tenant change: one build in the whole deployment.
	before, builds := d.versions(), d.settledBuilds()
	applyObjects(t, ctx, c, fleet.VirtualService(fleet.Tenant(2), "svc-00", 13))
	d.waitFor("the one-tenant change on every proxy of the tenant", 15*time.Second, func() bool {
		return d.changedAll(before, proxy.RDS, fleet.Tenant(2)) && d.agreed()
	})
	if n := d.settledBuilds() - builds; n != 1 {
		t.Fatalf("a one-tenant change cost %v builds in the deployment, want 1 (by its owner)", n)
	}

	// A mesh-wide change (istio-system): one build per tenant.
	all := len(d.owners())
	before, builds = d.versions(), d.settledBuilds()
	applyMeshWide(t, ctx, c, 1)
	d.waitFor("the mesh-wide change on every proxy", 15*time.Second, func() bool { return d.changedAll(before, proxy.EDS) && d.agreed() })
	if n := d.settledBuilds() - builds; n != float64(all) {
		t.Fatalf("a mesh-wide change cost %v builds in the deployment, want one per tenant (%d)", n, all)
	}
	d.anomalies()

	// A fourth replica joins: about a quarter of the tenants move to it,
	// and the others hand it streams a few at a time.
	was := d.owners()
	d.procs = append(d.procs, startProc(t, "r3", "", args...))
	d.waitFor("four members on every replica", 20*time.Second, func() bool { return d.members(4) })
	var now map[string]string
	d.waitFor("one owner per tenant after the join", 20*time.Second, func() bool { now = d.owners(); return len(now) == len(was) })
	moved := 0
	for tn, o := range now {
		if was[tn] != o {
			moved++
			if o != "r3" {
				t.Fatalf("tenant %s moved from %s to %s: a join may move tenants only to the new replica", tn, was[tn], o)
			}
		}
	}
	if limit := len(was)/4 + 2; moved > limit {
		t.Fatalf("%d of %d tenants moved to the fourth replica, want about a quarter (at most %d)", moved, len(was), limit)
	}
	total := len(d.proxies)
	share := int(math.Ceil(float64(total) / 4 * 1.1))
	var samples []int
	d.waitFor("the streams rebalanced to the fourth replica", 90*time.Second, func() bool {
		samples = append(samples, d.streamsOn(d.procs[3]))
		for _, p := range d.procs {
			if d.streamsOn(p) > share {
				return false
			}
		}
		return d.streamsOn(d.procs[3]) >= total/4-3
	})
	// Each replica sheds at most one stream per round here (fewer than
	// 1,000 streams), and rounds are at least 250 ms apart: the newcomer
	// gains at most three streams in any 200 ms (10 samples of 20 ms).
	for i := 10; i < len(samples); i++ {
		if samples[i]-samples[i-10] > 3 {
			t.Fatalf("the fourth replica gained %d streams in 200 ms: streams must move a few at a time (samples %v)", samples[i]-samples[i-10], samples)
		}
	}
	d.waitFor("versions agreed after the rebalance", 10*time.Second, d.agreed)
	d.anomalies()
	t.Logf("join: %d of %d tenants moved; %d streams on the newcomer (share %d) after %d samples", moved, len(was), d.streamsOn(d.procs[3]), share, len(samples))

	// SIGKILL of an idle replica: its proxies are back on current
	// versions (the time is logged; 5 s expected), and are re-sent nothing they
	// hold (delta: any resource; SotW: CDS and LDS, which they name the
	// version of).
	resent := d.resent()
	d.procs[1].kill()
	took := d.waitFor("every proxy of the killed replica on another, current", 5*time.Second, func() bool { return d.onLive() && d.agreed() })
	if n := d.resent() - resent; n != 0 {
		t.Fatalf("proxies failing over with current versions were re-sent %d resources they held (delta: any; SotW: CDS and LDS), want 0", n)
	}
	t.Logf("idle kill: proxies current on the survivors after %s", took.Round(time.Millisecond))
	d.waitFor("three members once the Lease expired", 15*time.Second, func() bool { return d.members(3) })

	// SIGKILL in the middle of a push, and a change during the failover to
	// a tenant the killed replica owned.
	owned := ""
	for tn, o := range d.owners() {
		if o == "r3" && strings.HasPrefix(tn, "tenant-") {
			owned = tn
		}
	}
	before = d.versions()
	applyMeshWide(t, ctx, c, 2)
	time.Sleep(30 * time.Millisecond)
	d.procs[3].kill()
	took = d.waitFor("every proxy on a survivor with the mesh-wide change", 5*time.Second, func() bool {
		return d.onLive() && d.changedAll(before, proxy.EDS) && d.agreed()
	})
	t.Logf("kill mid-push: proxies current on the survivors after %s", took.Round(time.Millisecond))
	if owned != "" {
		before = d.versions()
		applyObjects(t, ctx, c, fleet.VirtualService(owned, "svc-00", 31))
		d.waitFor("the change made during the failover on every proxy of "+owned, 15*time.Second, func() bool {
			return d.changedAll(before, proxy.RDS, owned) && d.agreed()
		})
	}
	d.waitFor("two members once the Lease expired", 15*time.Second, func() bool { return d.members(2) })
	d.waitFor("versions agreed on two replicas", 10*time.Second, d.agreed)
	d.anomalies()
}

// TestShardedReplicasWithStaticPeers runs three `xdshard serve --config
// DIR --peers ...` processes, no Kubernetes: a one-tenant file edit costs
// one build in the deployment; when a replica is killed, the survivors
// build its tenants while it does not answer (a static list never drops
// it), so its proxies are current again (logged; 5 s expected) and a change to one of
// its tenants still reaches every proxy; once it is back, it builds its
// tenants again and the others stop.
func TestShardedReplicasWithStaticPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const tenants = 9
	objs := fleet.Generate(fleet.Spec{Tenants: tenants, Services: 2, Endpoints: 1, Seed: 12})
	dir := t.TempDir()
	byNS := writeFleet(t, dir, objs)
	setWeight := func(ns string, w int) { setWeight(t, dir, byNS, ns, w) }

	d := staticDeployment(t, dir, 3, tenants)
	defer d.close()
	resp, err := http.Get("http://" + d.procs[0].admin + "/debug/members")
	if err != nil {
		t.Fatal(err)
	}
	var members []admin.Member
	err = json.NewDecoder(resp.Body).Decode(&members)
	resp.Body.Close()
	ownedAll := 0
	for _, m := range members {
		ownedAll += m.Owns
	}
	if err != nil || len(members) != 3 || ownedAll != tenants+1 || !members[0].Self {
		t.Fatalf("/debug/members: %+v (%v); want the three replicas, r0 itself, owning the %d tenants between them", members, err, tenants+1)
	}
	for i := 0; i < tenants; i++ {
		for home := range d.procs {
			d.connect(ctx, fleet.Tenant(i), home, (i+home)%2 == 0)
		}
	}
	d.waitFor("every proxy synced, with one version per tenant", 30*time.Second, d.agreed)

	before, builds := d.versions(), d.settledBuilds()
	setWeight(fleet.Tenant(4), 17)
	d.waitFor("the edit on every proxy of the tenant", 15*time.Second, func() bool {
		return d.changedAll(before, proxy.RDS, fleet.Tenant(4)) && d.agreed()
	})
	if n := d.settledBuilds() - builds; n != 1 {
		t.Fatalf("a one-tenant edit cost %v builds in the deployment, want 1 (by its owner)", n)
	}

	owners := d.owners()
	victim := d.procs[1]
	var owned string
	for tn, o := range owners {
		if o == victim.id && strings.HasPrefix(tn, "tenant-") {
			owned = tn
		}
	}
	if owned == "" {
		t.Fatalf("replica %s owns no tenant of %v", victim.id, owners)
	}
	resent := d.resent()
	victim.kill()
	took := d.waitFor("every proxy of the killed replica on another, current", 5*time.Second, func() bool { return d.onLive() && d.agreed() })
	if n := d.resent() - resent; n != 0 {
		t.Fatalf("proxies failing over with current versions were re-sent %d resources they held (delta: any; SotW: CDS and LDS), want 0", n)
	}
	t.Logf("kill: proxies current on the survivors after %s", took.Round(time.Millisecond))
	before = d.versions()
	setWeight(owned, 23)
	d.waitFor("a change to the dead replica's tenant on every proxy", 10*time.Second, func() bool {
		return d.changedAll(before, proxy.RDS, owned) && d.agreed()
	})

	// Back again: it builds its tenants, the survivors stop.
	victim.start(t)
	d.waitFor("no tenant adopted once the owner answers", 20*time.Second, func() bool {
		for _, p := range d.live() {
			if p.metric(t, "xdshard_adopted_tenants") != 0 {
				return false
			}
		}
		return true
	})
	before, builds = d.versions(), d.settledBuilds()
	setWeight(owned, 29)
	d.waitFor("a change to the returned replica's tenant on every proxy", 10*time.Second, func() bool {
		return d.changedAll(before, proxy.RDS, owned) && d.agreed()
	})
	if n := d.settledBuilds() - builds; n != 1 {
		t.Fatalf("with the owner back, a one-tenant edit cost %v builds, want 1", n)
	}
	d.anomalies()
}

// staticDeployment starts n `xdshard serve --config dir` processes
// sharding by static --peers (r0, r1, ...), each with args, and waits
// until the tenants (istio-system included) have one owner each.
func staticDeployment(t *testing.T, dir string, n, tenants int, args ...string) *deployment {
	t.Helper()
	addrs := freeAddrs(t, n)
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("r%d=%s", i, a))
	}
	d := &deployment{t: t}
	for i, a := range addrs {
		d.procs = append(d.procs, startProc(t, fmt.Sprint("r", i), a, append([]string{"--config", dir, "--peers", strings.Join(peers, ",")}, args...)...))
	}
	d.waitFor("one owner per tenant", 20*time.Second, func() bool { return len(d.owners()) == tenants+1 })
	return d
}

// everywhere connects a proxy of each of the first tenants to every
// replica (SotW and delta alternating), waits until every proxy is synced
// with one version per tenant, and returns the tenants' owners.
func (d *deployment) everywhere(ctx context.Context, tenants int) map[string]string {
	d.t.Helper()
	var owners map[string]string
	d.waitFor("one owner per tenant", 20*time.Second, func() bool { owners = d.owners(); return len(owners) > tenants })
	for i := 0; i < tenants; i++ {
		for home := range d.procs {
			d.connect(ctx, fleet.Tenant(i), home, (i+home)%2 == 1)
		}
	}
	d.waitFor("every proxy synced, with one version per tenant", 30*time.Second, d.agreed)
	return owners
}

// setWeight rewrites namespace ns's file in dir with its VirtualService
// svc-00 at weight w, keeping byNS (what dir holds, by namespace) current.
func setWeight(t *testing.T, dir string, byNS map[string][]*model.Object, ns string, w int) {
	t.Helper()
	list := slices.Clone(byNS[ns])
	for i, o := range list {
		if o.Kind == model.KindVirtualService && o.Name == "svc-00" {
			list[i] = fleet.VirtualService(ns, "svc-00", w)
		}
	}
	byNS[ns] = list
	writeNamespace(t, dir, ns, list)
}

// applyObjects applies objects to the API server, one request each.
func applyObjects(t *testing.T, ctx context.Context, c interface {
	Apply(context.Context, string) error
}, objs ...*model.Object) {
	t.Helper()
	var buf bytes.Buffer
	if err := manifest.Encode(&buf, objs); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, buf.String()); err != nil {
		t.Fatal(err)
	}
}

// applyMeshWide moves istio-system's shared-0 service to generation gen
// of its endpoints: one EndpointSlice, a change every tenant sees.
func applyMeshWide(t *testing.T, ctx context.Context, c interface {
	Apply(context.Context, string) error
}, gen int) {
	t.Helper()
	slice, _ := fleet.EndpointSlice(model.SharedNamespace, "shared-0", "http", 8080, 255, 0, 2, gen)
	applyObjects(t, ctx, c, slice)
}
