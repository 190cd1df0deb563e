package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/translate/policy"
)

func newAnalyzeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "analyze [--config DIR | --kubeconfig FILE [--context C]]",
		Short: "Report Istio/NetworkPolicy disagreements and cross-tenant exposure",
		Long: `Reports where Istio's authorization (generated policies included) and NetworkPolicies disagree,
and cross-tenant exposure. Exits 3 when it finds something, 2 when the config has errors
(as xdshard check reports them), 1 when it cannot run.`,
		Example: `  xdshard analyze --config ./mesh
  xdshard analyze --kubeconfig ~/.kube/config`,
		Args: noArgs("use --config DIR"),
	}
	in := inputFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return analyze(cmd.OutOrStdout(), in) }
	return cmd
}

func analyze(out io.Writer, in *input) error {
	mesh, res, err := in.load()
	if err != nil {
		return err
	}
	diags, err := checkMesh(mesh, res)
	if err != nil {
		return err
	}
	for _, d := range diags {
		fmt.Fprintln(os.Stderr, d.String())
	}
	findings := policy.Analyze(mesh)
	for _, f := range findings {
		fmt.Fprintln(out, f.String())
	}
	if err := configVerdict(diags, len(mesh.Tenants())); err != nil {
		return err // findings over a config with errors are not to be trusted
	}
	if len(findings) > 0 {
		return &exitError{code: exitFindings, msg: fmt.Sprintf("%d findings", len(findings))}
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
