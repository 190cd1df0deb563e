package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/xdshard/xdshard/proto/xdshard/admin/v1"
	"github.com/xdshard/xdshard/server/xds"
)

// syncName is istioctl's word for a sync state.
func syncName(s adminv1.SyncState) string {
	switch s {
	case adminv1.SyncState_SYNC_STATE_SYNCED:
		return "SYNCED"
	case adminv1.SyncState_SYNC_STATE_STALE:
		return "STALE"
	case adminv1.SyncState_SYNC_STATE_ERROR:
		return "ERROR"
	}
	return "NOT SENT"
}

func newProxyStatusCmd() *cobra.Command {
	var a adminConn
	var req adminv1.ProxyStatusRequest
	cmd := &cobra.Command{
		Use:   "proxy-status [PROXY]",
		Short: "List a replica's proxies and each type's sync state, as istioctl proxy-status",
		Long: `Lists the proxies connected to a replica and each type's sync state, as istioctl proxy-status
does (SYNCED: the proxy acknowledged what was sent; STALE: an answer is awaited; ERROR: it
rejected it; NOT SENT), plus the tenant and the version it is served. With PROXY (pod.namespace),
that proxy's per-type detail, with the rejection's text.`,
		Example: `  xdshard proxy-status
  xdshard proxy-status --tenant acme -o yaml
  xdshard proxy-status web-7d9f.shop`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: a.completeProxies,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.Proxy = args[0]
			}
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				resp, err := c.ProxyStatus(ctx, &req)
				if err != nil {
					return err
				}
				// istiod and peer replicas are streams, not proxies.
				var rows []*adminv1.Proxy
				for _, p := range resp.GetProxies() {
					if p.GetView() != "mcp" && p.GetView() != "peer" {
						rows = append(rows, p)
					}
				}
				resp.Proxies = rows
				out := cmd.OutOrStdout()
				if a.output != "table" {
					return printMessage(out, a.output, resp)
				}
				if req.Proxy != "" {
					if len(rows) == 0 {
						return &exitError{code: exitFailed, msg: fmt.Sprintf("proxy %q is not connected to the replica at %s (xdshard proxy-status lists those that are)", req.Proxy, a.addr)}
					}
					return proxyDetail(out, rows[len(rows)-1])
				}
				return proxyTable(out, resp.GetReplica(), rows)
			})
		},
	}
	cmd.Flags().StringVarP(&req.Namespace, "namespace", "n", "", "only the proxies of this namespace")
	cmd.Flags().StringVar(&req.Tenant, "tenant", "", "only the proxies of this tenant")
	a.bind(cmd, "table", "json", "yaml")
	return cmd
}

// proxyTable prints istioctl proxy-status's columns, with the tenant and
// the version served.
func proxyTable(out io.Writer, replica string, rows []*adminv1.Proxy) error {
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tTENANT\tCDS\tLDS\tEDS\tRDS\tISTIOD\tVERSION")
	for _, p := range rows {
		cols := []string{p.GetName(), p.GetTenant()}
		for _, short := range []string{"CDS", "LDS", "EDS", "RDS"} {
			state := "NOT SENT"
			for _, t := range p.GetTypes() {
				if t.GetShortName() == short {
					state = syncName(t.GetSync())
				}
			}
			cols = append(cols, state)
		}
		v := p.GetSnapshotVersion()
		if p.GetCanary() {
			v += " (canary)"
		}
		fmt.Fprintln(w, strings.Join(append(cols, replica, v), "\t"))
	}
	return w.Flush()
}

func proxyDetail(out io.Writer, p *adminv1.Proxy) error {
	mode := "SotW"
	if p.GetDelta() {
		mode = "delta"
	}
	canary := ""
	if p.GetCanary() {
		canary = " (a canary)"
	}
	fmt.Fprintf(out, "proxy %s (%s)\ntenant %s, view %s, %s, served version %s%s\n\n", p.GetName(), p.GetNodeId(), p.GetTenant(), p.GetView(), mode, p.GetSnapshotVersion(), canary)
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "TYPE\tSYNC\tSENT\tACKED\tSENT AT\tREJECTED")
	for _, t := range p.GetTypes() {
		nack := ""
		if n := t.GetLastNack(); n != nil {
			nack = n.GetVersion() + ": " + n.GetMessage()
		}
		sent := ""
		if t.GetSentAt() != nil {
			sent = t.GetSentAt().AsTime().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetShortName(), syncName(t.GetSync()), t.GetSentVersion(), t.GetAckedVersion(), sent, nack)
	}
	return w.Flush()
}

func newConfigDumpCmd() *cobra.Command {
	var a adminConn
	var types []string
	cmd := &cobra.Command{
		Use:   "config-dump PROXY",
		Short: "Print what a connected proxy is served, as Envoy's config dump",
		Long: `Prints what a connected proxy (pod.namespace) is served, as Envoy's admin config dump
(envoy.admin.v3.ConfigDump), in JSON or YAML.`,
		Example: `  xdshard config-dump web-7d9f.shop
  xdshard config-dump web-7d9f.shop --type cds,eds -o yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("config-dump takes one PROXY (pod.namespace); xdshard proxy-status lists them")
			}
			return nil
		},
		ValidArgsFunction: a.completeProxies,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.ConfigDumpRequest{Proxy: args[0]}
			for _, t := range types {
				v, ok := adminv1.ConfigType_value["CONFIG_TYPE_"+strings.ToUpper(strings.TrimSpace(t))]
				if !ok || v == 0 {
					return fmt.Errorf("--type %q: want cds, eds, lds or rds", t)
				}
				req.Types = append(req.Types, adminv1.ConfigType(v))
			}
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				resp, err := c.ConfigDump(ctx, req)
				if err != nil {
					return err
				}
				dump, err := resp.GetConfigDump().UnmarshalNew()
				if err != nil {
					return fmt.Errorf("the replica's config dump: %w", err)
				}
				// Envoy's admin /config_dump shape, as istioctl prints it.
				return printMessage(cmd.OutOrStdout(), a.output, dump)
			})
		},
	}
	cmd.Flags().StringSliceVar(&types, "type", nil, "only these of cds, eds, lds, rds (comma-separated)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{"cds", "eds", "lds", "rds"}, cobra.ShellCompDirectiveNoFileComp))
	a.bind(cmd, "json", "yaml")
	return cmd
}

func newDNSCmd() *cobra.Command {
	var a adminConn
	var req adminv1.ResolveDnsRequest
	cmd := &cobra.Command{
		Use:   "dns (--proxy POD.NS | --namespace NS) HOST",
		Short: "Say what a proxy resolves a host to through its DNS name table, or why not",
		Long: `Says what a proxy's tenant resolves HOST to through its DNS name table (what istio-agent's DNS
proxy answers from): its IPs and registry, or why it does not resolve (no such service; another
tenant's, not exported; no address; shadowed), and whether the proxy has the table at all.
Exits 3 when the host does not resolve.`,
		Example: `  xdshard dns --proxy web-7d9f.shop api.payments
  xdshard dns --namespace shop api.payments.svc.cluster.local`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("dns takes one HOST; see xdshard dns --help")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Host = args[0]
			if req.Proxy == "" && req.Namespace == "" {
				return fmt.Errorf("dns needs --proxy POD.NS or --namespace NS")
			}
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				r, err := c.ResolveDns(ctx, &req)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if a.output != "table" {
					if err := printMessage(out, a.output, r); err != nil {
						return err
					}
				} else {
					printDNS(out, r)
				}
				if !r.GetResolves() {
					return &exitError{code: exitFindings}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&req.Proxy, "proxy", "", "a connected proxy (pod.namespace): what it resolves, and whether it has its name table")
	cmd.Flags().StringVarP(&req.Namespace, "namespace", "n", "", "without --proxy: the namespace whose view to look at")
	_ = cmd.RegisterFlagCompletionFunc("proxy", func(c *cobra.Command, _ []string, s string) ([]string, cobra.ShellCompDirective) {
		return a.completeProxies(c, nil, s)
	})
	a.bind(cmd, "table", "json", "yaml")
	return cmd
}

func printDNS(out io.Writer, a *adminv1.ResolveDnsResponse) {
	who := "namespace " + a.GetNamespace()
	if a.GetNodeId() != "" {
		who = "proxy " + xds.ProxyName(a.GetNodeId())
	}
	if a.GetResolves() {
		fmt.Fprintf(out, "%s (tenant %s) resolves %s as %s to %s (%s)\n", who, a.GetTenant(), a.GetHost(), a.GetFqdn(), strings.Join(a.GetIps(), ", "), a.GetRegistry())
	} else {
		fmt.Fprintf(out, "%s (tenant %s) does not resolve %s:\n", who, a.GetTenant(), a.GetHost())
		for _, r := range a.GetReasons() {
			fmt.Fprintf(out, "  - %s\n", r)
		}
	}
	for _, n := range a.GetNotes() {
		fmt.Fprintf(out, "note: %s\n", n)
	}
}
