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
// operator said so: without mTLS anyone who can reach the port could claim
// any tenant's node identity.
func checkListenAddr(flagName, addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %v; want HOST:PORT such as 127.0.0.1:15010", flagName, addr, err)
	}
	if insecure {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--%s %q serves plaintext beyond loopback; bind 127.0.0.1, or pass --insecure if the network is trusted (mTLS is not built yet)", flagName, addr)
	}
	return nil
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
