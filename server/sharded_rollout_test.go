package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot/model"
)

// rollout reads a replica's /debug/rollout of tenant.
func (p *replicaProc) rollout(t *testing.T, tenant string) admin.RolloutStatus {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/debug/rollout?tenant=" + tenant)
	if err != nil {
		t.Fatalf("rollout of %s: %v", p.id, err)
	}
	defer resp.Body.Close()
	var st admin.RolloutStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("rollout of %s: %v", p.id, err)
	}
	return st
}

// TestShardedRollout runs a tenant's canary rollout over two replica
// processes with proxies on both: the tenant's canaries on the replica
// that does not own it get the candidate too, while no other proxy does
// until it is promoted; and a canary of that replica rejecting the next
// candidate takes it back everywhere, on the owner's decision, without any
// proxy that is not a canary ever receiving it. The rollout is the
// tenant's own setting (its Namespace's annotations; the replicas have
// none), so both replicas must pick its canaries by what the owner sends.
func TestShardedRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const percent = 50
	objs := fleet.Generate(fleet.Spec{Tenants: 3, Services: 2, Endpoints: 1, Seed: 21})
	for _, o := range objs {
		if o.Kind == model.KindNamespace && strings.HasPrefix(o.Name, "tenant-") {
			ann := map[string]string{model.RolloutAnnotation: "canary", model.RolloutPercentAnnotation: fmt.Sprint(percent)}
			o.Meta.Annotations = ann
			o.Body.(*corev1.Namespace).Annotations = ann
		}
	}
	dir := t.TempDir()
	byNS := writeFleet(t, dir, objs)
	d := staticDeployment(t, dir, 2, 3, "--rollout-bake", "2s")
	defer d.close()
	tenant := fleet.Tenant(0)
	owner := 0
	if d.owners()[tenant] != "r0" {
		owner = 1
	}
	other := 1 - owner

	// Proxies of the tenant on both replicas, canaries and not.
	isCanary := map[*fleetProxy]bool{}
	var canaries, rest []*fleetProxy
	for home := range d.procs {
		var c, r int
		for i := 0; i < 8; i++ {
			p := d.connect(ctx, tenant, home, i%2 == 0)
			if isCanary[p] = xds.IsCanary(p.NodeID(), percent); isCanary[p] {
				canaries, c = append(canaries, p), c+1
			} else {
				rest, r = append(rest, p), r+1
			}
		}
		if c == 0 || r == 0 {
			t.Fatalf("replica %s has %d canaries and %d other proxies: the test needs both on each", d.procs[home].id, c, r)
		}
	}
	d.waitFor("every proxy synced, with one version", 30*time.Second, d.agreed)
	rds := func(ps []*fleetProxy, v string) bool {
		for _, p := range ps {
			if p.Latest(proxy.RDS).Version != v {
				return false
			}
		}
		return true
	}

	// A good candidate: every canary, on either replica, gets it; the
	// others once it is promoted.
	stable := canaries[0].Latest(proxy.RDS).Version
	setWeight(t, dir, byNS, tenant, 17)
	d.waitFor("the candidate on every canary of both replicas", 20*time.Second, func() bool {
		v := canaries[0].Latest(proxy.RDS).Version
		return v != stable && rds(canaries, v)
	})
	cand := canaries[0].Latest(proxy.RDS).Version
	for _, p := range rest {
		if p.Saw(proxy.RDS, cand) {
			t.Fatalf("proxy %s on %s, not a canary, got the candidate before its promotion", p.NodeID(), p.Server())
		}
	}
	if st := d.procs[other].rollout(t, tenant); st.Candidate == "" || !st.Fetched {
		t.Fatalf("the replica that does not own %s shows no candidate fetched from its owner: %+v", tenant, st)
	}
	d.waitFor("the candidate promoted to every proxy", 30*time.Second, func() bool { return rds(append(slices.Clone(canaries), rest...), cand) })

	// A bad candidate, rejected by a canary of the replica that does not
	// own the tenant: the owner takes it back, everywhere.
	var nacker *proxy.Proxy
	for i := 0; nacker == nil; i++ {
		if p := proxy.New(tenant, fmt.Sprint("nacker-", i), false); xds.IsCanary(p.NodeID(), percent) {
			p.NACK = true // rejects everything it is sent, as an Envoy that cannot load it
			nacker = p
		}
	}
	conn, err := grpc.NewClient(d.procs[other].xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { _ = nacker.Run(ctx, conn) }()
	d.waitFor("the rejecting canary connected", 10*time.Second, func() bool { return nacker.Latest(proxy.RDS).Count > 0 })
	setWeight(t, dir, byNS, tenant, 29)
	var held admin.RolloutStatus
	d.waitFor("the owner takes the candidate back", 30*time.Second, func() bool {
		held = d.procs[owner].rollout(t, tenant)
		return held.Candidate == "" && held.Held != ""
	})
	if want := "on replica " + d.procs[other].id; !strings.Contains(held.HeldWhy, want) || !strings.Contains(held.HeldWhy, nacker.NodeID()) {
		t.Fatalf("the owner held %s out because %q; want the rejection %s, by %s", held.Held, held.HeldWhy, want, nacker.NodeID())
	}
	d.waitFor("every canary back on the stable version", 20*time.Second, func() bool { return rds(canaries, cand) })
	if st := d.procs[other].rollout(t, tenant); st.Candidate != "" {
		t.Fatalf("the other replica still serves a candidate: %+v", st)
	}
	rejected := slices.DeleteFunc(nacker.Seen(proxy.RDS), func(v string) bool { return v == cand })
	if len(rejected) == 0 {
		t.Fatal("the rejecting canary was never sent the candidate")
	}
	for _, p := range rest {
		for _, v := range rejected {
			if p.Saw(proxy.RDS, v) {
				t.Fatalf("proxy %s on %s, not a canary, got the rejected candidate's routes %s", p.NodeID(), p.Server(), v)
			}
		}
	}
	t.Logf("taken back everywhere: %s", held.HeldWhy)
}
