package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
)

// tenantVersion is the version replica p serves of tenant, and whether
// it is pinned.
func (p *replicaProc) tenantVersion(t *testing.T, tenant string) (string, bool) {
	t.Helper()
	for _, ts := range p.tenantz(t).Tenants {
		if ts.Tenant == tenant {
			return ts.Version, ts.Pinned
		}
	}
	return "", false
}

// post calls an admin write of replica p and fails the test unless it
// answers 200.
func (p *replicaProc) post(t *testing.T, path string) {
	t.Helper()
	resp, err := http.Post("http://"+p.admin+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s on %s: %s", path, p.id, resp.Status)
	}
}

// TestPinSurvivesARestartOfEveryReplica rolls a tenant back to the first
// of three versions on its owner, then kills every replica (SIGKILL) and
// edits the tenant while none runs: started again, every replica serves
// the pinned version, and so does every proxy, until the tenant is
// unpinned; then the newest version reaches them all.
func TestPinSurvivesARestartOfEveryReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	objs := fleet.Generate(fleet.Spec{Tenants: 2, Services: 2, Endpoints: 1, Seed: 23})
	dir := t.TempDir()
	byNS := writeFleet(t, dir, objs)
	d := staticDeployment(t, dir, 2, 2)
	defer d.close()
	tenant := fleet.Tenant(1)
	owner := d.procs[0]
	if d.owners()[tenant] != "r0" {
		owner = d.procs[1]
	}
	for home := range d.procs {
		for i := 0; i < 2; i++ {
			d.connect(ctx, tenant, home, false)
		}
	}
	d.waitFor("every proxy synced", 30*time.Second, d.agreed)
	rds := func(v string) bool {
		for p := range d.versions() {
			if p.Latest(proxy.RDS).Version != v {
				return false
			}
		}
		return true
	}
	first, _ := owner.tenantVersion(t, tenant)
	firstRDS := d.proxies[0].Latest(proxy.RDS).Version
	for _, w := range []int{11, 12} {
		before := d.versions()
		setWeight(t, dir, byNS, tenant, w)
		d.waitFor(fmt.Sprintf("weight %d on every proxy", w), 15*time.Second, func() bool { return d.changedAll(before, proxy.RDS, tenant) && d.agreed() })
	}

	owner.post(t, "/debug/rollback?tenant="+tenant+"&to="+first)
	d.waitFor("every proxy back on the first version", 15*time.Second, func() bool { return rds(firstRDS) })
	d.waitFor("the pin kept beside the config", 10*time.Second, func() bool { return owner.metric(t, "xdshard_decisions_kept_total") >= 1 })

	// Every replica gone at once; the tenant edited meanwhile.
	sent := map[*fleetProxy]int{}
	for p := range d.versions() {
		sent[p] = p.Latest(proxy.RDS).Count
	}
	for _, p := range d.procs {
		p.kill()
	}
	setWeight(t, dir, byNS, tenant, 13)
	for _, p := range d.procs {
		p.start(t)
	}
	// The owner restored the pin before its first build; a replica that
	// does not own the tenant holds it only once one of its proxies asks.
	if v, pinned := owner.tenantVersion(t, tenant); v != first || !pinned {
		t.Fatalf("restarted, the owner %s serves %s of %s (pinned %v); want the pinned %s", owner.id, v, tenant, pinned, first)
	}
	d.waitFor("every proxy sent its config again by a restarted replica", 30*time.Second, func() bool {
		for p, n := range sent {
			if p.Latest(proxy.RDS).Count <= n {
				return false
			}
		}
		return true
	})
	if !rds(firstRDS) {
		t.Fatalf("after the restart a proxy holds routes other than the pinned %s: %v", firstRDS, d.versions())
	}

	owner.post(t, "/debug/unpin?tenant="+tenant)
	d.waitFor("the newest version on every proxy once unpinned", 15*time.Second, func() bool {
		v := d.proxies[0].Latest(proxy.RDS).Version
		return v != firstRDS && rds(v)
	})
	for _, p := range d.procs {
		if _, pinned := p.tenantVersion(t, tenant); pinned {
			t.Fatalf("%s still holds %s pinned after the unpin", p.id, tenant)
		}
	}
}
