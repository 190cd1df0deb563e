package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
)

// checkListenAddr refuses plaintext serving beyond loopback unless the
// operator said so: without TLS anyone who can reach the port could claim
// any tenant's node identity. insecure is --insecure, or TLS on.
func checkListenAddr(flagName, addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %v; want HOST:PORT such as 127.0.0.1:15010", flagName, addr, err)
	}
	if insecure || loopbackHost(host) {
		return nil
	}
	return fmt.Errorf("--%s %q serves plaintext beyond loopback; bind 127.0.0.1, serve TLS (--tls-cert, --tls-key, --client-ca), or pass --insecure if the network is trusted", flagName, addr)
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// newLogger logs to standard error at level, as text or JSON (one object
// per line, for log collectors).
func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
