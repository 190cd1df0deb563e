package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/translate"
)

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [--config DIR [--max-file-bytes N] | --kubeconfig FILE [--context C]]",
		Short: "Validate a config directory as serve would, for CI (exit 2 on errors)",
		Long: `Validates a config directory as serve would, through every stage (decoding, istiod's
validation, generated policies, Envoy's validation of the resources built), and prints
every problem with its file:line. Exits 0 when nothing is rejected, 2 when something is,
1 when the directory cannot be read. Run it in CI before a change lands.`,
		Example: `  xdshard check --config ./mesh
  xdshard check --kubeconfig ~/.kube/config`,
		Args: noArgs("use --config DIR"),
	}
	in := inputFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return check(cmd.OutOrStdout(), in) }
	return cmd
}

func check(out io.Writer, in *input) error {
	mesh, res, err := in.load()
	if err != nil {
		return err
	}
	diags, err := checkMesh(mesh, res)
	if err != nil {
		return err
	}
	for _, d := range diags {
		fmt.Fprintln(out, d.String())
	}
	return configVerdict(diags, len(mesh.Tenants()))
}

// checkMesh builds every tenant as serve would and returns every problem
// found on the way, each once, sorted: the source's (including those that
// name no namespace) and each tenant's.
func checkMesh(mesh *model.Mesh, res *manifest.Result) ([]snapshot.Diagnostic, error) {
	seen := map[snapshot.Diagnostic]bool{}
	var out []snapshot.Diagnostic
	add := func(ds []snapshot.Diagnostic) {
		for _, d := range ds {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	add(res.Diags())
	for _, t := range mesh.Tenants() {
		snap, err := translate.Compose(mesh.View(t))
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w (a fault in xdshard; please report it with the config)", t, err)
		}
		add(snap.Diagnostics)
	}
	slices.SortStableFunc(out, func(a, b snapshot.Diagnostic) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// configVerdict is the exit of a command over a config with diags.
func configVerdict(diags []snapshot.Diagnostic, tenants int) error {
	errs := 0
	for _, d := range diags {
		if !d.Warning() {
			errs++
		}
	}
	summary := fmt.Sprintf("%d errors, %d warnings in %d tenants", errs, len(diags)-errs, tenants)
	if errs > 0 {
		return &exitError{code: exitConfigError, msg: summary + "; fix the errors above (serve would leave those objects out)"}
	}
	fmt.Fprintln(os.Stderr, summary)
	return nil
}
