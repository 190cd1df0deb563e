package opstate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/opstate"
	"github.com/xdshard/xdshard/snapshot"
)

func snap(t *testing.T, tenant string, body proto.Message) *snapshot.Snapshot {
	t.Helper()
	r, err := snapshot.Encode("a", body)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.New(tenant, map[snapshot.View]map[string]*snapshot.Set{
		snapshot.ViewEnvoy: {snapshot.ClusterType: snapshot.MustSet(snapshot.ClusterType, []*snapshot.Resource{r})}}, nil)
}

// roundTrip keeps two decisions, reads them back, forgets one and reads
// again, through k.
func roundTrip(t *testing.T, k opstate.Keeper) {
	t.Helper()
	ctx := context.Background()
	pinned := snap(t, "acme/web", wrapperspb.String("v1"))
	for _, d := range []opstate.Decision{
		{Tenant: "acme/web", Pinned: pinned, Held: "0123456789abcdef", HeldWhy: "p1 rejected CDS: bad"},
		{Tenant: "globex", Held: "fedcba9876543210", HeldWhy: "aborted by an operator"},
	} {
		if err := k.Keep(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	ds, bad, err := k.Load(ctx)
	if err != nil || len(bad) > 0 || len(ds) != 2 {
		t.Fatalf("Load: %d decisions, %v, %v; want 2", len(ds), bad, err)
	}
	for _, d := range ds {
		switch d.Tenant {
		case "acme/web":
			if d.Pinned == nil || d.Pinned.Version != pinned.Version || d.Held != "0123456789abcdef" || d.HeldWhy != "p1 rejected CDS: bad" {
				t.Fatalf("acme/web read back as %+v", d)
			}
			if got := d.Pinned.Set(snapshot.ViewEnvoy, snapshot.ClusterType).Get("a"); got == nil || !proto.Equal(got.Body, pinned.Set(snapshot.ViewEnvoy, snapshot.ClusterType).Get("a").Body) {
				t.Fatal("the pinned snapshot's resource did not come back")
			}
		case "globex":
			if d.Pinned != nil || d.Held != "fedcba9876543210" {
				t.Fatalf("globex read back as %+v", d)
			}
		default:
			t.Fatalf("a decision about %q came back", d.Tenant)
		}
	}
	// Unpinned, its held candidate kept; the other forgotten.
	if err := k.Keep(ctx, opstate.Decision{Tenant: "acme/web", Held: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Keep(ctx, opstate.Decision{Tenant: "globex"}); err != nil {
		t.Fatal(err)
	}
	if ds, _, err := k.Load(ctx); err != nil || len(ds) != 1 || ds[0].Tenant != "acme/web" || ds[0].Pinned != nil {
		t.Fatalf("after an unpin and a forget: %+v, %v", ds, err)
	}
}

func TestDirKeepsDecisions(t *testing.T) {
	dir := opstate.Dir(filepath.Join(t.TempDir(), "state"))
	if ds, _, err := dir.Load(context.Background()); err != nil || len(ds) != 0 {
		t.Fatalf("a directory not made yet: %v, %v", ds, err)
	}
	roundTrip(t, dir)
	// A file that is not a decision costs only itself.
	if err := os.WriteFile(filepath.Join(string(dir), "broken.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, bad, err := dir.Load(context.Background())
	if err != nil || len(ds) != 1 || len(bad) != 1 || !strings.Contains(bad[0].Error(), "broken.json") {
		t.Fatalf("with a broken file: %d decisions, %v, %v; want the good one, and the broken one named", len(ds), bad, err)
	}
	if got, want := string(opstate.DirBeside("/srv/mesh/")), "/srv/.mesh.xdshard-state"; got != want {
		t.Fatalf("DirBeside(/srv/mesh/) = %s, want %s", got, want)
	}
}

// TestConfigMapsKeepDecisions keeps decisions in a real API server.
func TestConfigMapsKeepDecisions(t *testing.T) {
	bin := kubetest.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := kubetest.StartWithCRDs(ctx, bin, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: xdshard}\n"); err != nil {
		t.Fatal(err)
	}
	k, err := opstate.NewConfigMaps(c.REST(), "xdshard")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, k)

	// A pinned version too big for a ConfigMap is refused, saying so.
	noise := make([]byte, opstate.MaxConfigMapBytes+(64<<10))
	_, _ = rand.Read(noise)
	err = k.Keep(ctx, opstate.Decision{Tenant: "big", Pinned: snap(t, "big", wrapperspb.Bytes(noise))})
	if !errors.Is(err, opstate.ErrTooBig) {
		t.Fatalf("a pinned snapshot of %d random bytes: %v, want ErrTooBig", len(noise), err)
	}
}
