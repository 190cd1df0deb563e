package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/xdshard/xdshard/proto/xdshard/admin/v1"
)

// The history, rollback, rollout, tenants and members commands call a
// running replica's admin gRPC API (proto/xdshard/admin/v1). The calls
// that change what is served are answered on a loopback admin address,
// or beyond it over TLS to the replica's --admin-writers.

func newTenantsCmd() *cobra.Command {
	var a adminConn
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "List a replica's tenants: version, owner, pin, and the problems with their objects",
		Example: `  xdshard tenants
  xdshard tenants -o yaml`,
		Args: noArgs("it lists every tenant"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				resp, err := c.ListTenants(ctx, &adminv1.ListTenantsRequest{})
				if err != nil || a.output != "table" {
					if err != nil {
						return err
					}
					return printMessage(cmd.OutOrStdout(), a.output, resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "TENANT\tVERSION\tBUILT\tKEPT\tOWNER\tSTATE")
				for _, t := range resp.GetTenants() {
					state := []string{}
					if t.GetPinned() {
						state = append(state, fmt.Sprintf("pinned, %d newer waiting", t.GetWaiting()))
					}
					if t.GetBuildError() != "" {
						state = append(state, "last build failed")
					}
					if n := len(t.GetDiagnostics()); n == 1 {
						state = append(state, "1 problem")
					} else if n > 1 {
						state = append(state, fmt.Sprintf("%d problems", n))
					}
					owner := t.GetOwner()
					if owner == "" {
						owner = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", t.GetName(), t.GetVersion(), t.GetBuilt().AsTime().Format(time.RFC3339), len(t.GetHistory()), owner, strings.Join(state, "; "))
				}
				if err := w.Flush(); err != nil {
					return err
				}
				if n := len(resp.GetMeshWide()); n > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%d problems belong to no tenant (-o yaml shows them)\n", n)
				}
				return nil
			})
		},
	}
	a.bind(cmd, "table", "json", "yaml")
	return cmd
}

func newHistoryCmd() *cobra.Command {
	var a adminConn
	var tenant string
	cmd := &cobra.Command{
		Use:   "history --tenant T",
		Short: "List the versions a running replica keeps of a tenant, and which it serves",
		Long:  "Lists the versions a replica keeps of a tenant (serve --history), oldest first, and which one it serves.",
		Example: `  xdshard history --tenant acme
  xdshard history --tenant acme -o json`,
		Args: noArgs("use --tenant"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				h, err := c.GetHistory(ctx, &adminv1.GetHistoryRequest{Tenant: tenant})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if a.output != "table" {
					return printMessage(out, a.output, h)
				}
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "VERSION\tBUILT\tSERVING")
				for _, v := range h.GetVersions() {
					serving := ""
					if v.GetServing() {
						serving = "*"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", v.GetVersion(), v.GetBuilt().AsTime().Format(time.RFC3339), serving)
				}
				if err := w.Flush(); err != nil {
					return err
				}
				if h.GetPinned() {
					fmt.Fprintf(out, "pinned, %d newer versions waiting (xdshard unpin --tenant %s)\n", h.GetWaiting(), h.GetTenant())
				}
				return nil
			})
		},
	}
	tenantFlag(cmd, &tenant)
	a.bind(cmd, "table", "json", "yaml")
	return cmd
}

// servingResponse is what each write call answers: the version served now.
type servingResponse interface{ GetServingVersion() string }

// newWriteCmd is a command that changes what a tenant is served with one
// write call and says the version served after it: rollback, unpin,
// rollout promote and abort. done formats that line from the tenant
// (%[1]s, and again %[3]s) and the version served (%[2]s).
func newWriteCmd(cmd *cobra.Command, call func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error), done string) *cobra.Command {
	var a adminConn
	tenant := new(string)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
			resp, err := call(ctx, c, *tenant)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), done+"\n", *tenant, resp.GetServingVersion(), *tenant)
			return nil
		})
	}
	tenantFlag(cmd, tenant)
	a.bind(cmd)
	return cmd
}

func newRollbackCmd() *cobra.Command {
	var to string
	cmd := newWriteCmd(&cobra.Command{
		Use:   "rollback --tenant T [--to VERSION]",
		Short: "Serve an earlier kept version of a tenant and pin it (new builds wait)",
		Long: `Serves an earlier kept version of a tenant and pins it: new builds of the tenant are held
(xdshard history shows "pinned, N newer versions waiting") until xdshard unpin.`,
		Example: `  xdshard rollback --tenant acme
  xdshard rollback --tenant acme --to 3f9c2a7d01b4e6c8`,
		Args: noArgs("use --tenant and --to"),
	}, func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error) {
		return c.Rollback(ctx, &adminv1.RollbackRequest{Tenant: tenant, ToVersion: to})
	}, "tenant %[1]s serves %[2]s, pinned; new builds wait until: xdshard unpin --tenant %[3]s")
	cmd.Flags().StringVar(&to, "to", "", "the kept version to serve (default: the one before the version served); see xdshard history")
	return cmd
}

func newUnpinCmd() *cobra.Command {
	cmd := newWriteCmd(&cobra.Command{
		Use:     "unpin --tenant T",
		Short:   "Serve a tenant's newest version again after a rollback",
		Long:    "Serves a tenant's newest version again, and follows new builds.",
		Example: "  xdshard unpin --tenant acme",
		Args:    noArgs("use --tenant"),
	}, func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error) {
		return c.Unpin(ctx, &adminv1.UnpinRequest{Tenant: tenant})
	}, "tenant %[1]s serves %[2]s, its newest version")
	return cmd
}

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout status|promote|abort --tenant T",
		Short: "Show, promote or abort a tenant's canary rollout (serve --rollout)",
		Long: `With serve --rollout canary (or a tenant's Namespace annotation xdshard.io/rollout: canary), a
tenant's new version goes to its canaries first: --rollout-percent of its proxies by node ID hash,
or those whose labels match --rollout-selector (the annotations xdshard.io/rollout-percent and
xdshard.io/rollout-selector for one tenant). It is promoted once every canary accepted it and
--rollout-bake passed, and taken back at once when a canary rejects it (more than
--rollout-max-nack-ratio of them, when set). status shows the setting, the stable version, the
candidate and the last version held out (and why); promote serves the candidate to all now;
abort takes it back.`,
		Example: `  xdshard rollout status --tenant acme
  xdshard rollout promote --tenant acme
  xdshard rollout abort --tenant acme`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("rollout needs an action: xdshard rollout status|promote|abort --tenant T")
			}
			return fmt.Errorf("rollout %q: want status, promote or abort", args[0])
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	var sa adminConn
	var st string
	status := &cobra.Command{
		Use:     "status --tenant T",
		Short:   "Show a tenant's rollout: the stable version, the candidate, the version held out and why",
		Example: "  xdshard rollout status --tenant acme",
		Args:    noArgs("use --tenant"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sa.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				resp, err := c.GetRollout(ctx, &adminv1.GetRolloutRequest{Tenant: st})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if sa.output != "table" {
					return printMessage(out, sa.output, resp)
				}
				r := resp.GetRollout()
				setting := "the replica's setting (serve --rollout)"
				if r.GetSetting() == "tenant" {
					setting = "the tenant's own setting (Namespace annotation xdshard.io/rollout)"
				}
				if !r.GetEnabled() {
					fmt.Fprintf(out, "tenant %s: no canary rollout, by %s; every proxy is served %s\n", r.GetTenant(), setting, r.GetStable())
					return nil
				}
				canaries := fmt.Sprintf("%d%% of its proxies (by node ID hash)", r.GetPercent())
				if r.GetSelector() != "" {
					canaries = fmt.Sprintf("the proxies labelled %s", r.GetSelector())
				}
				tolerated := "none may reject it"
				if r.GetMaxNackRatio() > 0 {
					tolerated = fmt.Sprintf("up to %g of them may reject it", r.GetMaxNackRatio())
				}
				fmt.Fprintf(out, "tenant %s: canary rollout, by %s\n  canaries:  %s; bake %s, %s\n  stable:    %s\n", r.GetTenant(), setting, canaries, r.GetBake(), tolerated, r.GetStable())
				if r.GetCandidate() != "" {
					fmt.Fprintf(out, "  candidate: %s, served to the canaries since %s\n", r.GetCandidate(), r.GetSince().AsTime().Format(time.RFC3339))
				} else {
					fmt.Fprintf(out, "  candidate: none\n")
				}
				if r.GetHeld() != "" {
					fmt.Fprintf(out, "  held out:  %s: %s\n", r.GetHeld(), r.GetHeldWhy())
				}
				return nil
			})
		},
	}
	tenantFlag(status, &st)
	sa.bind(status, "table", "json", "yaml")
	cmd.AddCommand(status)
	for _, action := range []struct {
		name, short string
		call        func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error)
	}{
		{"promote", "Serve a tenant's candidate to every proxy now", func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error) {
			return c.PromoteRollout(ctx, &adminv1.PromoteRolloutRequest{Tenant: tenant})
		}},
		{"abort", "Take a tenant's candidate back from the canaries and hold its version out", func(ctx context.Context, c adminv1.AdminServiceClient, tenant string) (servingResponse, error) {
			return c.AbortRollout(ctx, &adminv1.AbortRolloutRequest{Tenant: tenant})
		}},
	} {
		c := newWriteCmd(&cobra.Command{
			Use:     action.name + " --tenant T",
			Short:   action.short,
			Example: "  xdshard rollout " + action.name + " --tenant acme",
			Args:    noArgs("use --tenant"),
		}, action.call, "tenant %[1]s: every proxy is served %[2]s")
		cmd.AddCommand(c)
	}
	return cmd
}

func newMembersCmd() *cobra.Command {
	var a adminConn
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the replicas sharding the tenants, as one replica sees them",
		Example: `  xdshard members
  xdshard members -o json`,
		Args: noArgs("it lists every member"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(func(ctx context.Context, c adminv1.AdminServiceClient) error {
				resp, err := c.ListMembers(ctx, &adminv1.ListMembersRequest{})
				if err != nil {
					return err
				}
				if a.output != "table" {
					return printMessage(cmd.OutOrStdout(), a.output, resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "REPLICA\tPEER ADDRESS\tSTREAMS\tTENANTS OWNED")
				for _, m := range resp.GetMembers() {
					id := m.GetId()
					if m.GetSelf() {
						id += " (this one)"
					}
					streams := "-"
					if m.Streams != nil {
						streams = fmt.Sprint(m.GetStreams())
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", id, m.GetPeerAddr(), streams, m.GetOwnedTenants())
				}
				return w.Flush()
			})
		},
	}
	a.bind(cmd, "table", "json", "yaml")
	return cmd
}
