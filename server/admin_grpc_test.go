package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	adminv1 "github.com/xdshard/xdshard/proto/xdshard/admin/v1"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// TestAdminGRPC: the admin gRPC service answers on the admin address
// beside the HTTP pages (HTTP/1.1 curl still works there), over a real
// proxy's stream: proxy status with per-type SYNCED, a config dump that
// unpacks as Envoy's, history, rollback and unpin; bad calls get
// InvalidArgument or NotFound with the reason.
func TestAdminGRPC(t *testing.T) {
	src := memory.New(fleet.Generate(fleet.Spec{Tenants: 2, Services: 2, Endpoints: 1, Seed: 5}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, xc := startPlain(t, server.Config{Source: src, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", ReplicaID: "a", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	tenant := fleet.Tenant(0)
	p := proxy.New(tenant, "p0", false)
	go func() { _ = p.Run(ctx, xc) }()
	synced(t, p.Synced())

	ac, err := grpc.NewClient(r.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	api := adminv1.NewAdminServiceClient(ac)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()

	var ps *adminv1.ProxyStatusResponse
	eventually(t, "p0 SYNCED on CDS in ProxyStatus", func() bool {
		ps, err = api.ProxyStatus(cctx, &adminv1.ProxyStatusRequest{Tenant: tenant, Proxy: "p0"})
		if err != nil {
			t.Fatal(err)
		}
		if len(ps.GetProxies()) != 1 {
			return false
		}
		for _, ty := range ps.GetProxies()[0].GetTypes() {
			if ty.GetShortName() == "CDS" && ty.GetSync() == adminv1.SyncState_SYNC_STATE_SYNCED {
				return true
			}
		}
		return false
	})
	if ps.GetReplica() != "xdshard-a" {
		t.Errorf("replica = %q, want xdshard-a", ps.GetReplica())
	}
	if other, err := api.ProxyStatus(cctx, &adminv1.ProxyStatusRequest{Tenant: fleet.Tenant(1)}); err != nil || len(other.GetProxies()) != 0 {
		t.Errorf("ProxyStatus of another tenant = %v, %v; want none", other, err)
	}

	dump, err := api.ConfigDump(cctx, &adminv1.ConfigDumpRequest{Proxy: "p0", Types: []adminv1.ConfigType{adminv1.ConfigType_CONFIG_TYPE_CDS}})
	if err != nil {
		t.Fatal(err)
	}
	var cd adminv3.ConfigDump
	if err := dump.GetConfigDump().UnmarshalTo(&cd); err != nil {
		t.Fatal(err)
	}
	if len(cd.GetConfigs()) != 1 || !strings.HasSuffix(cd.GetConfigs()[0].GetTypeUrl(), "ClustersConfigDump") {
		t.Errorf("config dump narrowed to CDS has %d configs: %v", len(cd.GetConfigs()), cd.GetConfigs())
	}
	if dump.GetProxy().GetTenant() != tenant {
		t.Errorf("config dump's proxy state = %v", dump.GetProxy())
	}
	if _, err := api.ConfigDump(cctx, &adminv1.ConfigDumpRequest{Proxy: "nobody.nowhere"}); status.Code(err) != codes.NotFound {
		t.Errorf("ConfigDump of an absent proxy: %v, want NotFound", err)
	}

	v1 := r.Store().Current(tenant).Version
	if err := src.Apply(ctx, fleet.ScaleEndpoints(0, 0, 2, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a second version", func() bool { return r.Store().Current(tenant).Version != v1 })
	rb, err := api.Rollback(cctx, &adminv1.RollbackRequest{Tenant: tenant})
	if err != nil || rb.GetServingVersion() != v1 {
		t.Fatalf("Rollback = %v, %v; want serving %s", rb, err, v1)
	}
	h, err := api.GetHistory(cctx, &adminv1.GetHistoryRequest{Tenant: tenant})
	if err != nil || !h.GetPinned() || len(h.GetVersions()) < 2 {
		t.Fatalf("GetHistory after rollback = %v, %v; want pinned with 2 versions", h, err)
	}
	if _, err := api.Unpin(cctx, &adminv1.UnpinRequest{Tenant: tenant}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Rollback(cctx, &adminv1.RollbackRequest{Tenant: tenant, ToVersion: "no-such-version"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Rollback to an unkept version: %v, want FailedPrecondition", err)
	}
	if _, err := api.GetHistory(cctx, &adminv1.GetHistoryRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetHistory without a tenant: %v, want InvalidArgument", err)
	}
	if _, err := api.GetHistory(cctx, &adminv1.GetHistoryRequest{Tenant: strings.Repeat("x", 300)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetHistory of a 300-byte tenant: %v, want InvalidArgument", err)
	}
	tl, err := api.ListTenants(cctx, &adminv1.ListTenantsRequest{})
	if err != nil || len(tl.GetTenants()) < 2 {
		t.Errorf("ListTenants = %v, %v", tl, err)
	}

	resp, err := http.Get("http://" + r.AdminAddr() + "/debug/syncz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "p0") {
		t.Errorf("HTTP/1.1 /debug/syncz beside gRPC: %d %s", resp.StatusCode, body)
	}
}
