package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// The history commands talk to a running replica's admin port: they read
// /debug/history and post /debug/rollback and /debug/unpin, which a
// replica answers on loopback (or, over TLS, to --admin-writers).

func adminFlags(name string) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("admin-addr", "127.0.0.1:15014", "HOST:PORT of the replica's admin port (serve's --admin-addr); with sharding, the tenant's owner (see /debug/tenantz)")
	tenant := fs.String("tenant", "", "the tenant (required)")
	return fs, addr, tenant
}

func parseAdmin(fs *flag.FlagSet, args []string, tenant *string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", fs.Name(), fs.Args())
	}
	if *tenant == "" {
		return fmt.Errorf("%s needs --tenant T (the tenants: /debug/tenantz on the admin port)", fs.Name())
	}
	return nil
}

// adminCall makes one admin request and decodes its JSON answer into out.
func adminCall(method, addr, path string, q url.Values, out any) error {
	u := "http://" + addr + path + "?" + q.Encode()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("admin port %s: %w (is xdshard serve running there? pass --admin-addr)", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: exitFailed, msg: fmt.Sprintf("%s %s: %s", method, path, strings.TrimSpace(string(body)))}
	}
	return json.Unmarshal(body, out)
}

func historyCmd(args []string) error {
	fs, addr, tenant := adminFlags("history")
	asJSON := fs.Bool("json", false, "print the replica's JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard history --tenant T [--admin-addr HOST:PORT] [--json]\n\nLists the versions a replica keeps of a tenant, oldest first, and which one it serves.\n\nExample:\n  xdshard history --tenant acme")
		fs.PrintDefaults()
	}
	if err := parseAdmin(fs, args, tenant); err != nil {
		return err
	}
	var h struct {
		Tenant   string `json:"tenant"`
		Pinned   bool   `json:"pinned"`
		Waiting  int    `json:"waiting"`
		Versions []struct {
			Version string    `json:"version"`
			Built   time.Time `json:"built"`
			Serving bool      `json:"serving"`
		} `json:"versions"`
	}
	if err := adminCall(http.MethodGet, *addr, "/debug/history", url.Values{"tenant": {*tenant}}, &h); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tBUILT\tSERVING")
	for _, v := range h.Versions {
		serving := ""
		if v.Serving {
			serving = "*"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", v.Version, v.Built.Format(time.RFC3339), serving)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if h.Pinned {
		fmt.Printf("pinned, %d newer versions waiting (xdshard unpin --tenant %s)\n", h.Waiting, h.Tenant)
	}
	return nil
}

func rollbackCmd(args []string) error {
	fs, addr, tenant := adminFlags("rollback")
	to := fs.String("to", "", "the kept version to serve (default: the one before the version served); see xdshard history")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard rollback --tenant T [--to VERSION] [--admin-addr HOST:PORT]\n\nServes an earlier kept version of a tenant and pins it: new builds wait until xdshard unpin.\n\nExamples:\n  xdshard rollback --tenant acme\n  xdshard rollback --tenant acme --to 3f9c2a7d01b4e6c8")
		fs.PrintDefaults()
	}
	if err := parseAdmin(fs, args, tenant); err != nil {
		return err
	}
	var out map[string]string
	if err := adminCall(http.MethodPost, *addr, "/debug/rollback", url.Values{"tenant": {*tenant}, "to": {*to}}, &out); err != nil {
		return err
	}
	fmt.Printf("tenant %s serves %s, pinned; new builds wait until: xdshard unpin --tenant %s\n", *tenant, out["serving"], *tenant)
	return nil
}

func unpinCmd(args []string) error {
	fs, addr, tenant := adminFlags("unpin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard unpin --tenant T [--admin-addr HOST:PORT]\n\nServes a tenant's newest version again, and follows new builds.\n\nExample:\n  xdshard unpin --tenant acme")
		fs.PrintDefaults()
	}
	if err := parseAdmin(fs, args, tenant); err != nil {
		return err
	}
	var out map[string]string
	if err := adminCall(http.MethodPost, *addr, "/debug/unpin", url.Values{"tenant": {*tenant}}, &out); err != nil {
		return err
	}
	fmt.Printf("tenant %s serves %s, its newest version\n", *tenant, out["serving"])
	return nil
}

func rolloutCmd(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("rollout needs an action: xdshard rollout status|promote|abort --tenant T")
	}
	action := args[0]
	fs, addr, tenant := adminFlags("rollout " + action)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard rollout status|promote|abort --tenant T [--admin-addr HOST:PORT]\n\nWith serve --rollout-percent P, a tenant's new version goes to P% of its proxies first (canaries,\nby node ID hash); it is promoted once every canary accepted it and --rollout-bake passed, and\ntaken back at once if one rejects it. status shows the stable version, the candidate and the\nlast version held out (and why); promote serves the candidate to all now; abort takes it back.\n\nExamples:\n  xdshard rollout status --tenant acme\n  xdshard rollout abort --tenant acme")
		fs.PrintDefaults()
	}
	if err := parseAdmin(fs, args[1:], tenant); err != nil {
		return err
	}
	q := url.Values{"tenant": {*tenant}}
	switch action {
	case "status":
		var st map[string]any
		if err := adminCall(http.MethodGet, *addr, "/debug/rollout", q, &st); err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "promote", "abort":
		var out map[string]string
		if err := adminCall(http.MethodPost, *addr, "/debug/rollout/"+action, q, &out); err != nil {
			return err
		}
		fmt.Printf("tenant %s: every proxy is served %s\n", *tenant, out["serving"])
		return nil
	}
	return fmt.Errorf("rollout %q: want status, promote or abort", action)
}
