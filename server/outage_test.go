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

// TestAPIServerOutage runs three replicas sharding by Leases against a real
// API server and stops the API server for 30 s, ten lease durations (3 s
// Leases):
// every replica stays ready (kubelet keeps its endpoints) and keeps its
// members and its tenants' owners, no tenant is built again, the proxies
// keep their streams and versions; once the API server is back, a change
// made then reaches every proxy of its tenant. Before, each replica dropped
// every member whose Lease it could not see renewed, itself included, left
// readiness and built every tenant.
func TestAPIServerOutage(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const tenants = 6
	d, _ := leaseDeployment(t, ctx, c, "o", tenants, 17)
	defer d.close()
	owners := d.everywhere(ctx, tenants)
	builds := d.settledBuilds()
	versions := d.versions()

	c.StopAPIServer()
	restarted := false
	defer func() {
		if !restarted {
			_ = c.StartAPIServer(context.Background()) // the cluster is shared by the package's tests
		}
	}()
	const outage = 30 * time.Second
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, p := range d.procs {
			resp, err := http.Get("http://" + p.admin + "/readyz")
			if err != nil {
				t.Fatalf("replica %s during the outage: %v", p.id, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("replica %s left readiness (%d) %v into the API server's outage:\n%s", p.id, resp.StatusCode, outage-time.Until(end), p.log.Tail(20))
			}
		}
		if !d.members(3) {
			t.Fatalf("a replica lost members during the API server's outage:\n%s", d.procs[0].log.Tail(20))
		}
	}
	if now := d.owners(); fmt.Sprint(now) != fmt.Sprint(owners) {
		t.Fatalf("owners changed during the outage: %v, were %v", now, owners)
	}
	if n := d.builds(); n != builds {
		t.Fatalf("%v builds during the outage, want none (every tenant was built again)", n-builds)
	}
	for p, vs := range d.versions() {
		if fmt.Sprint(vs) != fmt.Sprint(versions[p]) {
			t.Fatalf("proxy %s of %s changed versions during the outage: %v, was %v", p.NodeID(), p.tenant, vs, versions[p])
		}
	}

	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	d.waitFor("three members once the API server is back", 30*time.Second, func() bool { return d.members(3) })
	before := d.versions()
	applyObjects(t, ctx, c, fleet.VirtualService(fleet.Tenant(1), "svc-00", 21))
	// client-go's informers would resume their watches only after their
	// backoff (up to a minute after 30 s without an answer); the source
	// lists again with fresh informers as soon as its probe sees the API
	// server answer. The bound here is a hang check, not a figure.
	d.waitFor("the change made after the outage on every proxy of the tenant", 3*time.Minute, func() bool {
		return d.changedAll(before, proxy.RDS, fleet.Tenant(1)) && d.agreed()
	})
	d.anomalies()
}
