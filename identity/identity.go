package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Identity is a verified client: its namespace and service account, and
// how it proved them.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
	Via            string // "mtls" or "token"
}

// SPIFFE is the identity's SPIFFE URI.
func (i Identity) SPIFFE() string {
	return "spiffe://" + i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
}

// String is "namespace/service-account", the form allow-lists use.
func (i Identity) String() string { return i.Namespace + "/" + i.ServiceAccount }

// ParseSPIFFE reads a SPIFFE URI of Istio's shape,
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
func ParseSPIFFE(uri string) (Identity, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return Identity{}, fmt.Errorf("%.256q is not a SPIFFE URI (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)", uri)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return Identity{}, fmt.Errorf("SPIFFE URI %.256q is not of Istio's shape spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", uri)
	}
	return Identity{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// FromCertificate reads the identity of a verified certificate: its one
// SPIFFE URI SAN.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := ParseSPIFFE(u.String())
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("the certificate has no SPIFFE URI SAN (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)")
	case 1:
		found[0].Via = "mtls"
		return found[0], nil
	}
	return Identity{}, errors.New("the certificate has more than one SPIFFE URI SAN; a workload has one identity")
}

// Refusal is an authentication failure with a reason for metrics and
// logs (no_credentials, bad_token, token_review_failed, no_spiffe_id, ...).
type Refusal struct {
	Reason string
	Err    error
}

func (r *Refusal) Error() string { return r.Err.Error() }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// TokenVerifier verifies a bearer token and says whose it is.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// Authenticator finds who a gRPC client is: the identity in its client
// certificate (verified by the TLS handshake against the client CA), or
// else a bearer token in its `authorization` metadata, verified by
// Tokens, as istiod accepts istio-agent's.
type Authenticator struct {
	Tokens TokenVerifier // nil: certificates only
}

// Authenticate returns the client's identity, or a *Refusal.
func (a *Authenticator) Authenticate(ctx context.Context) (Identity, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			id, err := FromCertificate(ti.State.PeerCertificates[0])
			if err != nil {
				return Identity{}, &Refusal{Reason: "no_spiffe_id", Err: err}
			}
			return id, nil
		}
	}
	token, err := bearer(ctx)
	if err != nil {
		return Identity{}, err
	}
	if a.Tokens == nil {
		return Identity{}, refuse("no_credentials", "no client certificate; present a certificate with a SPIFFE identity signed by the client CA")
	}
	id, err := a.Tokens.Verify(ctx, token)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			return Identity{}, r
		}
		return Identity{}, &Refusal{Reason: "bad_token", Err: err}
	}
	id.Via = "token"
	return id, nil
}

// MaxTokenBytes bounds a bearer token read from a client.
const MaxTokenBytes = 16 << 10

func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", refuse("no_credentials", "no client certificate and no bearer token; present a certificate with a SPIFFE identity signed by the client CA, or a service-account token (authorization: Bearer <token>, audience istio-ca)")
	}
	if len(vals) > 1 {
		return "", refuse("bad_token", "more than one authorization header")
	}
	v := vals[0]
	if len(v) > MaxTokenBytes {
		return "", refuse("bad_token", "the authorization header is %d bytes; at most %d", len(v), MaxTokenBytes)
	}
	token, ok := strings.CutPrefix(v, "Bearer ")
	if !ok || token == "" {
		return "", refuse("bad_token", "the authorization header is not \"Bearer <token>\"")
	}
	return token, nil
}

// AllowList is a set of identities, each "namespace/service-account",
// "namespace/prefix*" (any service account starting with prefix; "*" for
// all), or a SPIFFE URI (which also pins the trust domain).
type AllowList []string

// Allows says whether id is on the list.
func (l AllowList) Allows(id Identity) bool {
	return slices.ContainsFunc(l, func(e string) bool {
		if strings.HasPrefix(e, "spiffe://") {
			return e == id.SPIFFE()
		}
		ns, sa, _ := strings.Cut(e, "/")
		if prefix, ok := strings.CutSuffix(sa, "*"); ok {
			return ns == id.Namespace && strings.HasPrefix(id.ServiceAccount, prefix)
		}
		return ns == id.Namespace && sa == id.ServiceAccount
	})
}

// ParseAllowList reads a comma-separated allow-list and checks each entry.
func ParseAllowList(s string) (AllowList, error) {
	var out AllowList
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.HasPrefix(e, "spiffe://") {
			if _, err := ParseSPIFFE(e); err != nil {
				return nil, err
			}
		} else if ns, sa, ok := strings.Cut(e, "/"); !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
			return nil, fmt.Errorf("allow-list entry %q: want namespace/service-account, namespace/*, or a SPIFFE URI", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// ClientIdentity is the identity a TLS connection state's verified peer
// certificate carries (for HTTP handlers).
func ClientIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, false
	}
	id, err := FromCertificate(cs.PeerCertificates[0])
	return id, err == nil
}
