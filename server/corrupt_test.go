package server_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// corruption breaks one tenant's file, as a user or an adversary might.
type corruption struct {
	name string
	// shows is the text of the diagnostic it causes; "" for any error;
	// "?" when it may cause none (a file cut at a document's end reads as
	// an edit that deleted the documents after it).
	shows string
	// apply rewrites the file at path, whose objects are objs.
	apply func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object)
}

var corruptions = []corruption{
	{"a Service port above 65535", "", func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object) {
		writeObjects(t, path, mutate(objs, rng, model.KindService, func(o *model.Object) {
			svc := o.Body.(*corev1.Service).DeepCopy()
			svc.Spec.Ports[0].Port = 70000
			o.Body = svc
		}))
	}},
	{"an empty endpoint address", "endpoint address \"\" is empty", func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object) {
		writeObjects(t, path, mutate(objs, rng, model.KindEndpointSlice, func(o *model.Object) {
			es := o.Body.(*discoveryv1.EndpointSlice).DeepCopy()
			es.Endpoints[0].Addresses[0] = ""
			o.Body = es
		}))
	}},
	{"a regex that does not compile", "", func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object) {
		writeObjects(t, path, mutate(objs, rng, model.KindVirtualService, func(o *model.Object) {
			vs := proto.Clone(o.Body.(*networking.VirtualService)).(*networking.VirtualService)
			vs.Http[0].Match = []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: "(unclosed"}}}}
			o.Body = vs
		}))
	}},
	{"a truncated file", "?", func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		writeAtomic(t, path, string(data[:rng.IntN(len(data))]))
	}},
	{"an unreadable file", "", func(t *testing.T, rng *rand.Rand, path string, objs []*model.Object) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Symlink(path+".gone", path); err != nil {
			t.Fatal(err)
		}
	}},
}

// mutate returns objs with one object of kind (picked by rng) changed by f
// on a copy.
func mutate(objs []*model.Object, rng *rand.Rand, kind model.Kind, f func(*model.Object)) []*model.Object {
	var idx []int
	for i, o := range objs {
		if o.Kind == kind {
			idx = append(idx, i)
		}
	}
	out := append([]*model.Object(nil), objs...)
	if len(idx) == 0 {
		return out
	}
	i := idx[rng.IntN(len(idx))]
	cp := *objs[i]
	f(&cp)
	out[i] = &cp
	return out
}

func writeObjects(t *testing.T, path string, objs []*model.Object) {
	t.Helper()
	var b bytes.Buffer
	if err := manifest.Encode(&b, objs); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	writeAtomic(t, path, b.String())
}

// TestCorruptionCostsOnlyItsTenant corrupts one tenant's file at a time,
// in every way above, in a running replica: no other tenant's snapshot
// changes, the problem shows in /debug/tenantz, the replica keeps serving,
// and restoring the file restores the tenant.
func TestCorruptionCostsOnlyItsTenant(t *testing.T) {
	objs := fleet.Generate(fleet.Spec{Tenants: 4, Services: 3, Endpoints: 2, Seed: 7})
	byNS := model.ByNamespace(objs)
	dir := t.TempDir()
	for ns, list := range byNS {
		writeObjects(t, filepath.Join(dir, ns+".yaml"), list)
	}
	r, src, _ := startReplicaSource(t, dir)
	baseline := versions(r)
	if len(baseline) != 5 {
		t.Fatalf("tenants %v", baseline)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for round := 0; round < 2*len(corruptions); round++ {
		c := corruptions[round%len(corruptions)]
		victim := fleet.Tenant(rng.IntN(4))
		path := filepath.Join(dir, victim+".yaml")
		t.Logf("round %d: %s in %s", round, c.name, victim)
		c.apply(t, rng, path, byNS[victim])
		if c.shows == "?" {
			appliedAndBuilt(t, r, src, dir, path)
		} else {
			eventually(t, c.name+" in "+victim+" reported in /debug/tenantz", func() bool { return reported(t, r, victim, c.shows) })
			// Reported: the source handed it over, and the builds it
			// causes are pending.
			eventually(t, "every build published", r.Idle)
		}
		for tenant, v := range versions(r) {
			if tenant != victim && v != baseline[tenant] {
				t.Fatalf("round %d (%s in %s): tenant %s changed from %s to %s", round, c.name, victim, tenant, baseline[tenant], v)
			}
		}
		if ok, why := r.Ready(); !ok {
			t.Fatalf("round %d: the replica stopped serving: %s", round, why)
		}
		_ = os.Remove(path)
		writeObjects(t, path, byNS[victim])
		appliedAndBuilt(t, r, src, dir, path)
		if v := versions(r)[victim]; v != baseline[victim] || reported(t, r, victim, "") {
			t.Fatalf("round %d: %s restored is at %s (want %s), errors reported: %v", round, victim, v, baseline[victim], reported(t, r, victim, ""))
		}
	}
}

func versions(r *server.Replica) map[string]string {
	out := map[string]string{}
	for _, tenant := range r.Tenants() {
		out[tenant] = r.Store().Current(tenant).Version
	}
	return out
}

// reported says whether /debug/tenantz shows, for the victim's file or
// objects, in its tenant or the mesh-wide section, a diagnostic saying
// shows, or with shows "", an error (not a warning: the fleet's own
// Sidecars replace the generated ones).
func reported(t *testing.T, r *server.Replica, victim, shows string) bool {
	var tz admin.Tenantz
	getJSON(t, r, "/debug/tenantz", &tz)
	all := tz.MeshWide.Diagnostics
	for _, ts := range tz.Tenants {
		all = append(all, ts.Diagnostics...)
	}
	for _, d := range all {
		if !strings.Contains(d.Origin, victim+".yaml") && d.Namespace != victim {
			continue
		}
		if shows == "" && !d.Warning() || shows != "" && strings.Contains(d.Message, shows) {
			return true
		}
	}
	return false
}

// appliedAndBuilt waits (failing only on a hang) until src has handed
// the builder what the files at paths hold now, and every build that
// caused is published: a sync point, not a wait for a while.
func appliedAndBuilt(t *testing.T, r *server.Replica, src *manifest.Source, dir string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the source read "+rel+" as it is now", func() bool {
			info, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			return src.Applied(filepath.ToSlash(rel), info)
		})
	}
	eventually(t, "every build published", r.Idle)
}
