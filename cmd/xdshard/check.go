package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// Exit codes of every command, for scripts and CI pipelines:
const (
	exitOK          = 0 // done; the config has no errors (warnings may be printed)
	exitFailed      = 1 // the command could not run: bad flags, an unreadable directory, a fault
	exitConfigError = 2 // the config has errors: objects or files that serve would reject
	exitFindings    = 3 // analyze found disagreements or cross-tenant exposure
)

// exitError ends the process with code after its message (if any).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func checkCmd(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	in := inputFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: xdshard check [--config DIR [--max-file-bytes N] | --kubeconfig FILE [--context C]]\n\nValidates a config directory as serve would, through every stage (decoding, istiod's\nvalidation, generated policies, Envoy's validation of the resources built), and prints\nevery problem with its file:line. Exits 0 when nothing is rejected, 2 when something is,\n1 when the directory cannot be read. Run it in CI before a change lands.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check takes no arguments, got %q; use --config DIR", fs.Args())
	}
	mesh, res, err := in.load()
	if err != nil {
		return err
	}
	diags, err := checkMesh(mesh, res)
	if err != nil {
		return err
	}
	for _, d := range diags {
		fmt.Println(d.String())
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
