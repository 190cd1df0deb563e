package server

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/server/xds"
)

// secure counts and logs the client certificates refused in handshakes.
func (r *Replica) secure() {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_refused_handshakes_total",
		Help: "TLS client certificates refused, by reason (expired_certificate, unknown_authority, bad_certificate)."}, []string{"reason"})
	r.reg.MustRegister(refused)
	r.cfg.TLS.OnRefuse = func(reason string, err error) {
		refused.WithLabelValues(reason).Inc()
		r.log.Info("client certificate refused", "reason", reason, "err", err)
	}
}

// grpcOptions are a gRPC server's options: xds's and a handshake timeout;
// the peer port takes larger requests and has its credentials here (the
// xDS port's count its connections: countingCreds).
func (r *Replica) grpcOptions(peers bool) []grpc.ServerOption {
	opts := xds.GRPCOptions()
	if !peers && r.cfg.MaxConnectionAge > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second,
			MaxConnectionAge: r.cfg.MaxConnectionAge, MaxConnectionAgeGrace: 10 * time.Second}))
	}
	if peers {
		opts = append(opts, grpc.MaxRecvMsgSize(xds.PeerMaxRequestBytes), grpc.Creds(r.creds()))
	}
	// A connection's handshake (TLS) must complete within this, so one
	// that never does holds a pending slot briefly (grpc-go's default: 120 s).
	return append(opts, grpc.ConnectionTimeout(10*time.Second))
}

// creds are the transport credentials of the xDS and peer ports: TLS with
// client certificates asked for, or none in plaintext.
func (r *Replica) creds() credentials.TransportCredentials {
	if r.cfg.TLS != nil {
		return credentials.NewTLS(r.cfg.TLS.ServerConfig())
	}
	return insecure.NewCredentials()
}

// mcpGRPCOptions are the MCP port's gRPC options: xds's, and server-side
// TLS when set, asking for no client certificate (istiod has none to give).
func (r *Replica) mcpGRPCOptions() []grpc.ServerOption {
	opts := xds.GRPCOptions()
	if r.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(r.cfg.TLS.ServerOnlyConfig())))
	}
	return append(opts, grpc.ConnectionTimeout(10*time.Second))
}

// peerIdentities are the identities that may fetch snapshots: the
// configured ones, or this replica's own (replicas share an identity).
func (r *Replica) peerIdentities() identity.AllowList {
	if len(r.cfg.PeerIdentities) > 0 {
		return r.cfg.PeerIdentities
	}
	return identity.AllowList{r.cfg.TLS.Self().SPIFFE()}
}

// adminReaders may read the admin port beyond loopback.
func (r *Replica) adminReaders() identity.AllowList {
	if len(r.cfg.AdminReaders) > 0 {
		return r.cfg.AdminReaders
	}
	return identity.AllowList{"istio-system/*"}
}

// authorizeAdmin says whether an admin request may be answered: on a
// loopback listener always; beyond it, only to a reader identified by its
// verified client certificate or a service-account token.
func (r *Replica) authorizeAdmin(req *http.Request) (int, error) {
	var id identity.Identity
	if cid, ok := identity.ClientIdentity(req.TLS); ok {
		id = cid
	} else if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok && r.cfg.Tokens != nil && len(tok) <= identity.MaxTokenBytes {
		var err error
		// The caller's address, as a gRPC peer's: its host's review
		// budget is its own.
		ctx := req.Context()
		if addr, aerr := net.ResolveTCPAddr("tcp", req.RemoteAddr); aerr == nil {
			ctx = peer.NewContext(ctx, &peer.Peer{Addr: addr})
		}
		if id, err = r.cfg.Tokens.Verify(ctx, tok); err != nil {
			return http.StatusUnauthorized, err
		}
	} else if r.cfg.TLS == nil {
		// Plaintext beyond loopback is --insecure: the operator trusts the network.
		return 0, nil
	} else {
		return http.StatusUnauthorized, errors.New("the admin port beyond loopback needs a client certificate or a service-account token (Authorization: Bearer)")
	}
	if !r.adminReaders().Allows(id) {
		return http.StatusForbidden, errors.New(id.SPIFFE() + " may not read the admin port; readers: " + strings.Join(r.adminReaders(), ", "))
	}
	return 0, nil
}

// isLoopback says whether a listener listens on loopback only.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// authorizeWrite says whether an admin call may change what is served: on
// a loopback listener always; beyond it only over TLS, to an identity on
// AdminWriters.
func (r *Replica) authorizeWrite(req *http.Request, loopback bool) (int, error) {
	if loopback {
		return 0, nil
	}
	id, ok := identity.ClientIdentity(req.TLS)
	if !ok {
		return http.StatusForbidden, errors.New("write calls beyond loopback need a client certificate of an identity on --admin-writers; or call from the replica's own host")
	}
	if !r.cfg.AdminWriters.Allows(id) {
		return http.StatusForbidden, errors.New(id.SPIFFE() + " may not change what is served; writers: " + strings.Join(r.cfg.AdminWriters, ", "))
	}
	return 0, nil
}
