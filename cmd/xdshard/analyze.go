package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/translate/policy"
)

func analyzeCmd(args []string) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	config := fs.String("config", "", "directory of YAML manifests (default: the embedded demo mesh)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard analyze [--config DIR]\n\nReports where Istio's authorization (generated policies included) and NetworkPolicies disagree,\nand cross-tenant exposure. Exits 3 when it finds something.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	mesh, res, err := loadMesh(*config)
	if err != nil {
		return err
	}
	for _, d := range res.Diags() {
		fmt.Fprintln(os.Stderr, d.Error())
	}
	findings := policy.Analyze(mesh)
	for _, f := range findings {
		fmt.Println(f.String())
	}
	if len(findings) > 0 {
		fmt.Fprintf(os.Stderr, "%d findings\n", len(findings))
		os.Exit(3)
	}
	fmt.Fprintln(os.Stderr, "no findings")
	return nil
}

// renderGenerated prints the generated objects of kind (all tenants, or
// one) as YAML for kubectl apply.
func renderGenerated(mesh *model.Mesh, tenant, kind string) error {
	if _, ok := model.Kinds[model.Kind(kind)]; !ok {
		return fmt.Errorf("--kind %q: want one of the generated kinds: NetworkPolicy, AuthorizationPolicy, PeerAuthentication, Sidecar", kind)
	}
	tenants := mesh.Tenants()
	if tenant != "" {
		tenants = []string{tenant}
	}
	var objs []*model.Object
	for _, t := range tenants {
		gen, _ := policy.Generate(mesh.View(t), policy.Options{})
		for _, o := range gen {
			if string(o.Kind) == kind {
				objs = append(objs, o)
			}
		}
	}
	return manifest.Encode(os.Stdout, objs)
}
