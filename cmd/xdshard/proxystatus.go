package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// proxyStatus is a row of /debug/syncz (server/xds.ClientStatus).
type proxyStatus struct {
	Node     string `json:"node"`
	Tenant   string `json:"tenant"`
	View     string `json:"view"`
	Delta    bool   `json:"delta"`
	Snapshot string `json:"snapshot"`
	Canary   bool   `json:"canary"`
	Types    map[string]struct {
		SentVersion  string    `json:"sentVersion"`
		AckedVersion string    `json:"ackedVersion"`
		SentAt       time.Time `json:"sentAt"`
		Sync         string    `json:"sync"`
		LastNACK     *struct {
			Version string `json:"version"`
			Message string `json:"message"`
		} `json:"lastNack"`
	} `json:"types"`
}

var shortTypes = []struct{ short, url string }{
	{"CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
	{"LDS", "type.googleapis.com/envoy.config.listener.v3.Listener"},
	{"EDS", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
	{"RDS", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
	{"NDS", "type.googleapis.com/istio.networking.nds.v1.NameTable"},
}

// podName is "pod.namespace" of an Istio node ID (sidecar~IP~pod.ns~...),
// else the node ID.
func podName(node string) string {
	if parts := strings.Split(node, "~"); len(parts) == 4 {
		return parts[2]
	}
	return node
}

func proxyStatusCmd(args []string) error {
	fs := flag.NewFlagSet("proxy-status", flag.ContinueOnError)
	addr := fs.String("admin-addr", "127.0.0.1:15014", "HOST:PORT of the replica's admin port (serve's --admin-addr)")
	ns := fs.String("namespace", "", "only the proxies of this namespace")
	tenant := fs.String("tenant", "", "only the proxies of this tenant")
	out := fs.String("o", "table", "table or json")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard proxy-status [--namespace NS] [--tenant T] [-o table|json] [PROXY]\n\nLists the proxies connected to a replica and each type's sync state, as istioctl proxy-status\ndoes (SYNCED: the proxy acknowledged what was sent; STALE: an answer is awaited; ERROR: it\nrejected it; NOT SENT), plus the tenant and the version it is served. With PROXY (pod.namespace),\nthat proxy's per-type detail, with the rejection's text.\n\nExamples:\n  xdshard proxy-status\n  xdshard proxy-status --tenant acme\n  xdshard proxy-status web-7d9f.shop")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 || (*out != "table" && *out != "json") {
		return fmt.Errorf("proxy-status takes at most one PROXY and -o table|json")
	}
	var rows []proxyStatus
	if err := adminGet(*addr, "/debug/syncz", nil, &rows); err != nil {
		return err
	}
	rows = slices.DeleteFunc(rows, func(r proxyStatus) bool {
		ns0 := podName(r.Node)
		if i := strings.LastIndex(ns0, "."); i >= 0 {
			ns0 = ns0[i+1:]
		}
		return r.View == "mcp" || r.View == "peer" || (*ns != "" && ns0 != *ns) || (*tenant != "" && r.Tenant != *tenant) ||
			(fs.NArg() == 1 && !strings.Contains(r.Node, fs.Arg(0)))
	})
	if *out == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if fs.NArg() == 1 {
		if len(rows) == 0 {
			return &exitError{code: exitFailed, msg: fmt.Sprintf("proxy %q is not connected to the replica at %s", fs.Arg(0), *addr)}
		}
		return proxyDetail(os.Stdout, rows[len(rows)-1])
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tTENANT\tCDS\tLDS\tEDS\tRDS\tVERSION")
	for _, r := range rows {
		cols := []string{podName(r.Node), r.Tenant}
		for _, t := range shortTypes[:4] {
			st, ok := r.Types[t.url]
			switch {
			case !ok:
				cols = append(cols, "NOT SENT")
			default:
				cols = append(cols, strings.ReplaceAll(st.Sync, "_", " "))
			}
		}
		v := r.Snapshot
		if r.Canary {
			v += " (canary)"
		}
		fmt.Fprintln(w, strings.Join(append(cols, v), "\t"))
	}
	return w.Flush()
}

func proxyDetail(out io.Writer, r proxyStatus) error {
	mode := "SotW"
	if r.Delta {
		mode = "delta"
	}
	fmt.Fprintf(out, "proxy %s (%s)\ntenant %s, view %s, %s, served version %s\n\n", podName(r.Node), r.Node, r.Tenant, r.View, mode, r.Snapshot)
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "TYPE\tSYNC\tSENT\tACKED\tSENT AT\tREJECTED")
	for _, t := range shortTypes {
		st, ok := r.Types[t.url]
		if !ok {
			continue
		}
		nack := ""
		if st.LastNACK != nil {
			nack = st.LastNACK.Version + ": " + st.LastNACK.Message
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.short, st.Sync, st.SentVersion, st.AckedVersion, st.SentAt.Format(time.RFC3339), nack)
	}
	return w.Flush()
}

func configDumpCmd(args []string) error {
	fs := flag.NewFlagSet("config-dump", flag.ContinueOnError)
	addr := fs.String("admin-addr", "127.0.0.1:15014", "HOST:PORT of the replica's admin port (serve's --admin-addr)")
	types := fs.String("type", "", "only these of cds, eds, lds, rds (comma-separated)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard config-dump PROXY [--type cds|eds|lds|rds] [--admin-addr HOST:PORT]\n\nPrints what a connected proxy (pod.namespace) is served, as Envoy's admin config dump (JSON).\n\nExamples:\n  xdshard config-dump web-7d9f.shop\n  xdshard config-dump web-7d9f.shop --type cds,eds")
		fs.PrintDefaults()
	}
	// The proxy may come before the flags, as in kubectl.
	var proxy string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		proxy, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if proxy == "" && fs.NArg() == 1 {
		proxy = fs.Arg(0)
	} else if fs.NArg() > 0 || proxy == "" {
		return fmt.Errorf("config-dump takes one PROXY (pod.namespace); see xdshard proxy-status")
	}
	for _, t := range strings.Split(*types, ",") {
		if t != "" && t != "cds" && t != "eds" && t != "lds" && t != "rds" {
			return fmt.Errorf("--type %q: want cds, eds, lds or rds", t)
		}
	}
	q := url.Values{"proxy": {proxy}}
	if *types != "" {
		q.Set("type", *types)
	}
	var dump json.RawMessage
	if err := adminGet(*addr, "/debug/config_dump", q, &dump); err != nil {
		return err
	}
	_, err := os.Stdout.Write(append(dump, '\n'))
	return err
}

func adminGet(addr, path string, q url.Values, out any) error {
	if q == nil {
		q = url.Values{}
	}
	return adminCall(http.MethodGet, addr, path, q, out)
}

func dnsCmd(args []string) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	addr := fs.String("admin-addr", "127.0.0.1:15014", "HOST:PORT of the replica's admin port (serve's --admin-addr)")
	proxyName := fs.String("proxy", "", "a connected proxy (pod.namespace): what it resolves, and whether it has its name table")
	ns := fs.String("namespace", "", "without --proxy: the namespace whose view to look at")
	asJSON := fs.Bool("json", false, "print the replica's JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard dns (--proxy POD.NS | --namespace NS) HOST\n\nSays what a proxy's tenant resolves HOST to through its DNS name table (what istio-agent's DNS\nproxy answers from): its IPs and registry, or why it does not resolve (no such service; another\ntenant's, not exported; no address; shadowed), and whether the proxy has the table at all.\n\nExamples:\n  xdshard dns --proxy web-7d9f.shop api.payments\n  xdshard dns --namespace shop api.payments.svc.cluster.local")
		fs.PrintDefaults()
	}
	var host string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		host, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if host == "" && fs.NArg() == 1 {
		host = fs.Arg(0)
	} else if fs.NArg() > 0 || host == "" {
		return fmt.Errorf("dns takes one HOST; see xdshard dns -h")
	}
	if *proxyName == "" && *ns == "" {
		return fmt.Errorf("dns needs --proxy POD.NS or --namespace NS")
	}
	var a struct {
		Host, Node, Namespace, Tenant, NDS, FQDN, Registry string
		Tried, IPs, Reasons, Notes                         []string
		Resolves                                           bool
	}
	if err := adminGet(*addr, "/debug/dnsz", url.Values{"proxy": {*proxyName}, "namespace": {*ns}, "host": {host}}, &a); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(a)
	}
	who := "namespace " + a.Namespace
	if a.Node != "" {
		who = "proxy " + podName(a.Node)
	}
	if a.Resolves {
		fmt.Printf("%s (tenant %s) resolves %s as %s to %s (%s)\n", who, a.Tenant, host, a.FQDN, strings.Join(a.IPs, ", "), a.Registry)
	} else {
		fmt.Printf("%s (tenant %s) does not resolve %s:\n", who, a.Tenant, host)
		for _, r := range a.Reasons {
			fmt.Printf("  - %s\n", r)
		}
	}
	for _, n := range a.Notes {
		fmt.Printf("note: %s\n", n)
	}
	if !a.Resolves {
		return &exitError{code: exitFindings}
	}
	return nil
}
