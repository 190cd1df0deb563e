package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

func renderCmd(args []string) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	in := inputFlags(fs)
	tenant := fs.String("tenant", "", "tenant to print; omitted: list the tenants")
	views := fs.String("view", "", "comma-separated views to print: envoy, grpc, nds, mcp (default: all)")
	kind := fs.String("kind", "", "print the generated isolation objects of this kind as YAML for kubectl apply (NetworkPolicy, AuthorizationPolicy, PeerAuthentication, Sidecar); with --tenant, that tenant's only")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard render [--config DIR] [--tenant T] [--view envoy,grpc] [--kind NetworkPolicy]\n\nPrints a tenant's snapshot as JSON: one object per xDS type, resources in protojson.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("render takes no arguments, got %q; use --tenant", fs.Args())
	}
	mesh, res, err := in.load()
	if err != nil {
		return err
	}
	if *tenant != "" && !contains(mesh.Tenants(), *tenant) {
		return fmt.Errorf("no tenant %q; tenants are %s", *tenant, strings.Join(mesh.Tenants(), ", "))
	}
	if err := renderOne(mesh, *tenant, *kind, *views); err != nil {
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
