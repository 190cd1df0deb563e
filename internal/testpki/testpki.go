// Package testpki issues certificates for tests: a CA, and workload
// certificates with SPIFFE URI SANs, made with crypto/x509 at test time
// (no private key is ever checked in).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a test certificate authority.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

func next() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// NewCA makes a CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: next(), Subject: pkix.Name{CommonName: name, Organization: []string{"xdshard tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Spec is a workload certificate to issue.
type Spec struct {
	SPIFFE    string // URI SAN; "" for none
	NotBefore time.Time
	NotAfter  time.Time // zero: a day from now
	DNS       []string  // DNS SANs beside localhost
}

// Issue signs a workload certificate (client and server auth, SAN
// 127.0.0.1 and localhost) and returns it and its key as PEM.
func (ca *CA) Issue(tb testing.TB, s Spec) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if s.NotBefore.IsZero() {
		s.NotBefore = time.Now().Add(-time.Hour)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{SerialNumber: next(), Subject: pkix.Name{Organization: []string{"xdshard tests"}},
		NotBefore: s.NotBefore, NotAfter: s.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: append([]string{"localhost"}, s.DNS...)}
	if s.SPIFFE != "" {
		u, err := url.Parse(s.SPIFFE)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TLS is a client certificate for s as a tls.Certificate.
func (ca *CA) TLS(tb testing.TB, s Spec) tls.Certificate {
	tb.Helper()
	c, k := ca.Issue(tb, s)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// KeyPEM is the CA's private key as PEM, for a program that signs with it
// (istiod's plugged-in CA, etc/cacerts/ca-key.pem).
func (ca *CA) KeyPEM(tb testing.TB) []byte {
	tb.Helper()
	kb, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// Pool is a pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteServer writes a server's cert.pem, key.pem and ca.pem (this CA)
// into dir and returns their paths.
func (ca *CA) WriteServer(tb testing.TB, dir string, s Spec) (cert, key, caFile string) {
	tb.Helper()
	c, k := ca.Issue(tb, s)
	cert, key, caFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for path, b := range map[string][]byte{cert: c, key: k, caFile: ca.PEM} {
		if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			tb.Fatal(err)
		}
	}
	return cert, key, caFile
}
