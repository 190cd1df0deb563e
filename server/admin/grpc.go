package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/xdshard/xdshard/proto/xdshard/admin/v1"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot"
)

// The admin gRPC service (proto/xdshard/admin/v1) answers from the same
// Options as the HTTP pages, on the same address: Handler routes HTTP/2
// requests of content type application/grpc to it, after the same
// Authorize (reads) and Write (the calls that change what is served).

// writeMethods change what is served; they need Options.Write.
var writeMethods = []string{
	adminv1.AdminService_Rollback_FullMethodName,
	adminv1.AdminService_Unpin_FullMethodName,
	adminv1.AdminService_PromoteRollout_FullMethodName,
	adminv1.AdminService_AbortRollout_FullMethodName,
}

// grpcHandler serves the admin gRPC service for Handler.
func grpcHandler(o Options) http.Handler {
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 20))
	adminv1.RegisterAdminServiceServer(srv, &service{o: o})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Authorize != nil {
			if code, err := o.Authorize(r); code != 0 {
				grpcRefuse(w, code, err.Error())
				return
			}
		}
		if slices.Contains(writeMethods, r.URL.Path) {
			if o.Write == nil {
				grpcRefuse(w, http.StatusForbidden, "this replica takes no write calls")
				return
			}
			if code, err := o.Write(r); code != 0 {
				grpcRefuse(w, code, err.Error())
				return
			}
		}
		srv.ServeHTTP(w, r)
	})
}

// isGRPC says whether r is a gRPC call.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcRefuse answers a gRPC call with a status and no message
// (trailers-only), so the client sees Unauthenticated or PermissionDenied
// with the reason rather than an HTTP error it cannot read.
func grpcRefuse(w http.ResponseWriter, httpCode int, msg string) {
	code := codes.PermissionDenied
	if httpCode == http.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", strconv.Itoa(int(code)))
	w.Header().Set("Grpc-Message", encodeGrpcMessage(msg))
	w.WriteHeader(http.StatusOK)
}

// encodeGrpcMessage percent-encodes what the gRPC spec asks of
// grpc-message (outside printable ASCII, and '%').
func encodeGrpcMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

type service struct {
	adminv1.UnimplementedAdminServiceServer
	o Options
}

var _ adminv1.AdminServiceServer = (*service)(nil)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// needTenant refuses a call that names no tenant.
func needTenant(t string) error {
	if t == "" {
		return status.Error(codes.InvalidArgument, "tenant is required (ListTenants names them)")
	}
	if len(t) > 253 {
		return status.Errorf(codes.InvalidArgument, "tenant name of %d bytes; at most 253", len(t))
	}
	return nil
}

var shortNames = map[string]string{
	"type.googleapis.com/envoy.config.cluster.v3.Cluster":                "CDS",
	"type.googleapis.com/envoy.config.listener.v3.Listener":              "LDS",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration":       "RDS",
	"type.googleapis.com/istio.networking.nds.v1.NameTable":              "NDS",
}

var syncStates = map[string]adminv1.SyncState{
	"SYNCED": adminv1.SyncState_SYNC_STATE_SYNCED, "STALE": adminv1.SyncState_SYNC_STATE_STALE,
	"ERROR": adminv1.SyncState_SYNC_STATE_ERROR, "NOT_SENT": adminv1.SyncState_SYNC_STATE_NOT_SENT,
}

func proxyProto(c xds.ClientStatus) *adminv1.Proxy {
	name := xds.ProxyName(c.Node)
	ns := ""
	if i := strings.LastIndex(name, "."); i >= 0 && name != c.Node {
		ns = name[i+1:]
	}
	p := &adminv1.Proxy{StreamId: c.ID, NodeId: c.Node, Name: name, Namespace: ns, Tenant: c.Tenant, View: string(c.View),
		Delta: c.Delta, Connected: ts(c.Connected), SnapshotVersion: c.Snapshot, Canary: c.Canary}
	for _, t := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.Types {
			if !yield(k) {
				return
			}
		}
	}) {
		st := c.Types[t]
		short := shortNames[t]
		if short == "" {
			short = t
		}
		tp := &adminv1.TypeStatus{TypeUrl: t, ShortName: short, Sync: syncStates[st.Sync], SentVersion: st.SentVersion,
			SentNonce: st.SentNonce, SentAt: ts(st.SentAt), AckedVersion: st.AckedVersion, AckedAt: ts(st.AckedAt),
			AwaitingAck: st.Awaiting, Wildcard: st.Wildcard, Subscribed: int32(st.Subscribed)}
		if n := st.LastNACK; n != nil {
			tp.LastNack = &adminv1.Nack{Version: n.Version, SnapshotVersion: n.Snapshot, Message: n.Message, At: ts(n.At)}
		}
		p.Types = append(p.Types, tp)
	}
	return p
}

func (s *service) ProxyStatus(_ context.Context, req *adminv1.ProxyStatusRequest) (*adminv1.ProxyStatusResponse, error) {
	out := &adminv1.ProxyStatusResponse{Replica: s.o.Replica}
	for _, c := range s.o.Clients() {
		p := proxyProto(c)
		if (req.GetNamespace() != "" && p.Namespace != req.GetNamespace()) || (req.GetTenant() != "" && p.Tenant != req.GetTenant()) ||
			(req.GetProxy() != "" && !strings.Contains(p.NodeId, req.GetProxy())) {
			continue
		}
		out.Proxies = append(out.Proxies, p)
	}
	return out, nil
}

var configTypes = map[adminv1.ConfigType]string{
	adminv1.ConfigType_CONFIG_TYPE_CDS: "cds", adminv1.ConfigType_CONFIG_TYPE_EDS: "eds",
	adminv1.ConfigType_CONFIG_TYPE_LDS: "lds", adminv1.ConfigType_CONFIG_TYPE_RDS: "rds",
}

func (s *service) ConfigDump(_ context.Context, req *adminv1.ConfigDumpRequest) (*adminv1.ConfigDumpResponse, error) {
	if s.o.ConfigDump == nil {
		return nil, status.Error(codes.Unimplemented, "this replica serves no config dumps")
	}
	if req.GetProxy() == "" {
		return nil, status.Error(codes.InvalidArgument, "proxy is required: pod.namespace, or part of its node ID (ProxyStatus lists them)")
	}
	var types []string
	for _, t := range req.GetTypes() {
		name, ok := configTypes[t]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "config type %v: want CDS, EDS, LDS or RDS", t)
		}
		types = append(types, name)
	}
	dump, err := s.o.ConfigDump(req.GetProxy(), types...)
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	a, err := anypb.New(dump)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := &adminv1.ConfigDumpResponse{ConfigDump: a}
	// The state of the same stream the dump was made of: the last one
	// whose node ID contains the name, as the dump picks it.
	for _, c := range s.o.Clients() {
		if strings.Contains(c.Node, req.GetProxy()) && c.View != "mcp" && c.View != "peer" {
			out.Proxy = proxyProto(c)
		}
	}
	return out, nil
}

func diagnostics(ds []snapshot.Diagnostic) []*adminv1.Diagnostic {
	out := make([]*adminv1.Diagnostic, 0, len(ds))
	for _, d := range ds {
		out = append(out, &adminv1.Diagnostic{Severity: string(d.Severity), Object: d.Object, Namespace: d.Namespace, Origin: d.Origin, Message: d.Message})
	}
	return out
}

func (s *service) ListTenants(context.Context, *adminv1.ListTenantsRequest) (*adminv1.ListTenantsResponse, error) {
	out := &adminv1.ListTenantsResponse{MeshWide: diagnostics(s.o.MeshWide())}
	for _, t := range Tenants(s.o.Store, s.o.Failures()) {
		owner, origin := s.o.Owner(t.Tenant)
		out.Tenants = append(out.Tenants, &adminv1.Tenant{Name: t.Tenant, Version: t.Version, Built: ts(t.Built), History: t.History,
			BuildError: t.BuildError, Owner: owner, Origin: origin, Pinned: t.Pinned, Waiting: int32(t.Waiting), Diagnostics: diagnostics(t.Diagnostics)})
	}
	return out, nil
}

func (s *service) GetHistory(_ context.Context, req *adminv1.GetHistoryRequest) (*adminv1.GetHistoryResponse, error) {
	if err := needTenant(req.GetTenant()); err != nil {
		return nil, err
	}
	cur := s.o.Store.Current(req.GetTenant())
	if cur == nil {
		return nil, status.Errorf(codes.NotFound, "tenant %q has no snapshot on this replica; ListTenants names those it has", req.GetTenant())
	}
	pinned, waiting := s.o.Store.Pinned(req.GetTenant())
	out := &adminv1.GetHistoryResponse{Tenant: req.GetTenant(), Pinned: pinned, Waiting: int32(waiting)}
	for _, h := range s.o.Store.History(req.GetTenant()) {
		out.Versions = append(out.Versions, &adminv1.Version{Version: h.Version, Built: ts(h.Built), Serving: cur != nil && h.Version == cur.Version})
	}
	return out, nil
}

// change runs one write call: its error is a FailedPrecondition (the
// tenant is not here, not pinned, has no candidate, is another's).
func change(tenant string, f func(string) (string, error)) (string, error) {
	if err := needTenant(tenant); err != nil {
		return "", err
	}
	if f == nil {
		return "", status.Error(codes.Unimplemented, "this replica does not offer this call")
	}
	v, err := f(tenant)
	if err != nil {
		return "", status.Error(codes.FailedPrecondition, err.Error())
	}
	return v, nil
}

func (s *service) Rollback(_ context.Context, req *adminv1.RollbackRequest) (*adminv1.RollbackResponse, error) {
	var f func(string) (string, error)
	if s.o.Rollback != nil {
		f = func(t string) (string, error) { return s.o.Rollback(t, req.GetToVersion()) }
	}
	v, err := change(req.GetTenant(), f)
	if err != nil {
		return nil, err
	}
	return &adminv1.RollbackResponse{Tenant: req.GetTenant(), ServingVersion: v}, nil
}

func (s *service) Unpin(_ context.Context, req *adminv1.UnpinRequest) (*adminv1.UnpinResponse, error) {
	v, err := change(req.GetTenant(), s.o.Unpin)
	if err != nil {
		return nil, err
	}
	return &adminv1.UnpinResponse{Tenant: req.GetTenant(), ServingVersion: v}, nil
}

func (s *service) GetRollout(_ context.Context, req *adminv1.GetRolloutRequest) (*adminv1.GetRolloutResponse, error) {
	if err := needTenant(req.GetTenant()); err != nil {
		return nil, err
	}
	if s.o.Rollout == nil {
		return nil, status.Error(codes.Unimplemented, "this replica runs no rollouts")
	}
	st, err := s.o.Rollout(req.GetTenant())
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	return &adminv1.GetRolloutResponse{Rollout: &adminv1.Rollout{Tenant: st.Tenant, Enabled: st.Enabled, Percent: int32(st.Percent),
		Selector: st.Selector, MaxNackRatio: st.MaxNACKRatio, Setting: st.Setting, Bake: st.Bake, Stable: st.Stable, Candidate: st.Candidate, Since: ts(st.Since), Held: st.Held, HeldWhy: st.HeldWhy}}, nil
}

func (s *service) PromoteRollout(_ context.Context, req *adminv1.PromoteRolloutRequest) (*adminv1.PromoteRolloutResponse, error) {
	v, err := change(req.GetTenant(), s.o.Promote)
	if err != nil {
		return nil, err
	}
	return &adminv1.PromoteRolloutResponse{Tenant: req.GetTenant(), ServingVersion: v}, nil
}

func (s *service) AbortRollout(_ context.Context, req *adminv1.AbortRolloutRequest) (*adminv1.AbortRolloutResponse, error) {
	v, err := change(req.GetTenant(), s.o.Abort)
	if err != nil {
		return nil, err
	}
	return &adminv1.AbortRolloutResponse{Tenant: req.GetTenant(), ServingVersion: v}, nil
}

func (s *service) ResolveDns(_ context.Context, req *adminv1.ResolveDnsRequest) (*adminv1.ResolveDnsResponse, error) {
	if s.o.DNS == nil {
		return nil, status.Error(codes.Unimplemented, "this replica offers no DNS diagnosis")
	}
	if req.GetHost() == "" || (req.GetProxy() == "" && req.GetNamespace() == "") {
		return nil, status.Error(codes.InvalidArgument, "host is required, and proxy (pod.namespace) or namespace")
	}
	a, err := s.o.DNS(req.GetProxy(), req.GetNamespace(), req.GetHost())
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	return &adminv1.ResolveDnsResponse{Host: a.Host, NodeId: a.Node, Namespace: a.Namespace, Tenant: a.Tenant, Nds: a.NDS, Tried: a.Tried,
		Resolves: a.Resolves, Fqdn: a.FQDN, Ips: a.IPs, Registry: a.Registry, Reasons: a.Reasons, Notes: a.Notes}, nil
}

func (s *service) ListMembers(context.Context, *adminv1.ListMembersRequest) (*adminv1.ListMembersResponse, error) {
	out := &adminv1.ListMembersResponse{}
	if s.o.Members == nil {
		return out, nil
	}
	for _, m := range s.o.Members() {
		pm := &adminv1.Member{Id: m.ID, PeerAddr: m.Addr, Self: m.Self, OwnedTenants: int32(m.Owns)}
		if m.Streams != nil {
			n := int32(*m.Streams)
			pm.Streams = &n
		}
		out.Members = append(out.Members, pm)
	}
	return out, nil
}
