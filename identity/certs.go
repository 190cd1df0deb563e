package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Files are where a replica's TLS material lives: its certificate chain
// and key (PEM), and the CA bundle its clients' (and peers') certificates
// must chain to.
type Files struct {
	Cert, Key, ClientCA string
}

// Certs keeps Files loaded and reloads them when their content changes
// (cert-manager and istio-agent rotate them in place). A reload that
// fails keeps the last good material and is logged.
type Certs struct {
	files Files
	log   *slog.Logger
	// OnRefuse is told of each client certificate refused in a handshake,
	// with its reason (no_client_ca_chain, expired_certificate,
	// unknown_authority, bad_certificate).
	OnRefuse func(reason string, err error)

	mu   sync.RWMutex
	cert *tls.Certificate
	pool *x509.CertPool
	self Identity
	sum  [32]byte // of the three files' content
}

// LoadCerts reads files once; Run keeps them fresh.
func LoadCerts(files Files, log *slog.Logger) (*Certs, error) {
	if files.Cert == "" || files.Key == "" || files.ClientCA == "" {
		return nil, errors.New("TLS needs a certificate, its key and a client CA (--tls-cert, --tls-key, --client-ca)")
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Certs{files: files, log: log, OnRefuse: func(string, error) {}}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Run reloads the files every period until ctx ends.
func (c *Certs) Run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := c.reload()
		switch {
		case err != nil:
			c.log.Warn("reloading the TLS certificate, key or client CA failed; keeping the last good ones", "err", err)
		case changed:
			c.log.Info("TLS certificate, key or client CA reloaded", "identity", c.Self().SPIFFE())
		}
	}
}

// MaxPEMBytes bounds each TLS file read.
const MaxPEMBytes = 1 << 20

func readPEM(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(b) > MaxPEMBytes {
		return nil, fmt.Errorf("%s %s is larger than %d bytes; is it the right file?", what, path, MaxPEMBytes)
	}
	return b, nil
}

// reload reads the files and swaps them in if their content changed.
func (c *Certs) reload() (bool, error) {
	certPEM, err := readPEM("certificate", c.files.Cert)
	if err != nil {
		return false, err
	}
	keyPEM, err := readPEM("key", c.files.Key)
	if err != nil {
		return false, err
	}
	caPEM, err := readPEM("client CA", c.files.ClientCA)
	if err != nil {
		return false, err
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, keyPEM, caPEM} {
		h.Write(b)
		h.Write([]byte{0})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	c.mu.RLock()
	same := sum == c.sum
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("certificate %s and key %s: %w", c.files.Cert, c.files.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return false, fmt.Errorf("certificate %s: %w", c.files.Cert, err)
	}
	self, err := FromCertificate(leaf)
	if err != nil {
		return false, fmt.Errorf("certificate %s: %w: xdshard's own certificate names its identity too (the peers allow it)", c.files.Cert, err)
	}
	cert.Leaf = leaf
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return false, fmt.Errorf("client CA %s holds no PEM certificate", c.files.ClientCA)
	}
	c.mu.Lock()
	c.cert, c.pool, c.self, c.sum = &cert, pool, self, sum
	c.mu.Unlock()
	return true, nil
}

// Self is the identity in this replica's own certificate.
func (c *Certs) Self() Identity {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.self
}

func (c *Certs) current() (*tls.Certificate, *x509.CertPool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, c.pool
}

// ServerConfig is the TLS configuration of a server face: the current
// certificate, and client certificates requested and verified here
// against the current client CA (a client without one may still present
// a token). Each refused certificate is reported with its reason.
func (c *Certs) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { cert, _ := c.current(); return cert, nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, pool := c.current()
			reason, err := verify(cs.PeerCertificates, pool, x509.ExtKeyUsageClientAuth)
			if err != nil {
				c.OnRefuse(reason, err)
			}
			return err
		},
	}
}

// ServerOnlyConfig is the TLS configuration of a face whose clients cannot
// present a certificate (istiod dialling its config source): the current
// certificate, and no client certificate asked for.
func (c *Certs) ServerOnlyConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		ClientAuth:     tls.NoClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { cert, _ := c.current(); return cert, nil },
	}
}

// ClientConfig is the TLS configuration a replica dials its peers with:
// its own certificate, and the peer's verified against the client CA and
// required to carry an identity on allow.
func (c *Certs) ClientConfig(allow AllowList) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { cert, _ := c.current(); return cert, nil },
		// Peers are dialled by pod IP, which their certificates do not
		// name: the chain and the SPIFFE identity are checked below
		// instead of the host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := c.current()
			if _, err := verify(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("peer certificate: %w", err)
			}
			id, err := FromCertificate(cs.PeerCertificates[0])
			if err != nil {
				return fmt.Errorf("peer certificate: %w", err)
			}
			if !allow.Allows(id) {
				return fmt.Errorf("peer %s is not an xdshard replica (allowed: %v)", id.SPIFFE(), allow)
			}
			return nil
		},
	}
}

// verify checks a presented chain against pool and says why it fails.
func verify(chain []*x509.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "no_certificate", errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err == nil {
		return "", nil
	}
	var inv x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "expired_certificate", fmt.Errorf("the certificate is expired or not yet valid (valid %s to %s): %w", chain[0].NotBefore.Format(time.RFC3339), chain[0].NotAfter.Format(time.RFC3339), err)
	case errors.As(err, &unknown):
		return "unknown_authority", fmt.Errorf("the certificate is not signed by the client CA: %w", err)
	}
	return "bad_certificate", err
}
