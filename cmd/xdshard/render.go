package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

func newRenderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "render [--config DIR] [--tenant T] [--view envoy,grpc] [--kind KIND]",
		Short: "Print a tenant's snapshot as JSON, list tenants, or print generated policies as YAML",
		Long: `Prints a tenant's snapshot as JSON: one object per xDS type, resources in protojson. Without
--tenant, lists the tenants. With --kind, prints the generated isolation objects of that kind as
YAML for kubectl apply. Exits 2 when serve would reject part of the config (see xdshard check).`,
		Example: `  xdshard render
  xdshard render --tenant acme --view grpc
  xdshard render --config ./mesh --kind NetworkPolicy | kubectl apply -f -`,
		Args: noArgs("use --tenant"),
	}
	in := inputFlags(cmd.Flags())
	tenant := cmd.Flags().String("tenant", "", "tenant to print; omitted: list the tenants")
	views := cmd.Flags().String("view", "", "comma-separated views to print: envoy, grpc, nds, mcp (default: all)")
	kind := cmd.Flags().String("kind", "", "print the generated isolation objects of this kind as YAML for kubectl apply (NetworkPolicy, AuthorizationPolicy, PeerAuthentication, Sidecar); with --tenant, that tenant's only")
	_ = cmd.RegisterFlagCompletionFunc("view", cobra.FixedCompletions([]string{"envoy", "grpc", "nds", "mcp"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions([]string{"NetworkPolicy", "AuthorizationPolicy", "PeerAuthentication", "Sidecar"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(*cobra.Command, []string) error { return render(in, *tenant, *views, *kind) }
	return cmd
}

func render(in *input, tenant, views, kind string) error {
	mesh, res, err := in.load()
	if err != nil {
		return err
	}
	if tenant != "" && !contains(mesh.Tenants(), tenant) {
		return fmt.Errorf("no tenant %q; tenants are %s", tenant, strings.Join(mesh.Tenants(), ", "))
	}
	if err := renderOne(mesh, tenant, kind, views); err != nil {
		return err
	}
	// The output is printed whatever the config's state; the exit code
	// says whether serve would reject part of it (see xdshard check).
	diags, err := checkMesh(mesh, res)
	if err != nil {
		return err
	}
	for _, d := range diags {
		if !d.Warning() {
			fmt.Fprintln(os.Stderr, d.String())
		}
	}
	return configVerdict(diags, len(mesh.Tenants()))
}

func renderOne(mesh *model.Mesh, tenant, kind, views string) error {
	if kind != "" {
		return renderGenerated(mesh, tenant, kind)
	}
	if tenant == "" {
		return listTenants(mesh)
	}
	snap, err := translate.Compose(mesh.View(tenant))
	if err != nil {
		return err
	}
	var vs []snapshot.View
	for _, v := range strings.Split(views, ",") {
		if v = strings.TrimSpace(v); v != "" {
			vs = append(vs, snapshot.View(v))
		}
	}
	out, err := xds.RenderJSON(snap, vs...)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

func listTenants(mesh *model.Mesh) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tNAMESPACES\tSERVICES")
	for _, t := range mesh.Tenants() {
		v := mesh.View(t)
		fmt.Fprintf(w, "%s\t%s\t%d\n", t, strings.Join(v.Namespaces, ","), len(v.Services))
	}
	return w.Flush()
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
