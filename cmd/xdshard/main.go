// Command xdshard is the one binary of xdshard: a sharded xDS/MCP control
// plane for large Istio meshes. This package is wiring only: flags,
// construction, Run. The commands follow kubectl's and istioctl's
// conventions (spf13/cobra): a one-line description, examples and --help
// on standard output, shell completion, -o json|yaml where the output is
// a table, and the exit codes below.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of every command, for scripts and CI pipelines:
const (
	exitOK          = 0 // done; the config has no errors (warnings may be printed)
	exitFailed      = 1 // the command could not run: bad flags, an unreadable directory, an unreachable replica, a fault
	exitConfigError = 2 // the config has errors: objects or files that serve would reject
	exitFindings    = 3 // analyze found disagreements or cross-tenant exposure; dns: the host does not resolve
)

// exitError ends the process with code after its message (if any).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

const exitCodesHelp = `Exit codes:
  0  done; the config has no errors (warnings may be printed)
  1  the command could not run: bad flags, an unreadable directory, an unreachable replica, a fault
  2  the config has errors: objects or files that serve would reject (check, render, analyze)
  3  analyze found disagreements or cross-tenant exposure; dns: the host does not resolve`

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "xdshard",
		Short: "A sharded xDS/MCP control plane for large Istio meshes",
		Long: `xdshard reads a mesh's configuration (a manifest directory, the embedded demo, or Kubernetes),
groups it by tenant, builds one versioned snapshot per tenant, and serves it over gRPC ADS to
istiod (MCP), Envoy sidecars, proxyless gRPC clients and istio-agent (NDS).

` + exitCodesHelp,
		Example: `  # Serve the embedded demo mesh on 127.0.0.1:15010 (xDS) and 127.0.0.1:15014 (admin)
  xdshard serve

  # Which proxies are connected, and did they accept what they were sent?
  xdshard proxy-status

  # Shell completion (bash, zsh, fish, powershell)
  source <(xdshard completion bash)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Help without a command is the root's help, exit 0.
		Run: func(cmd *cobra.Command, _ []string) { _ = cmd.Help() },
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w; see '%s --help'", cmd.CommandPath(), err, cmd.CommandPath())
	})
	root.AddGroup(&cobra.Group{ID: "mesh", Title: "Serving and checking a mesh:"},
		&cobra.Group{ID: "ops", Title: "Operating a running replica (over its admin gRPC API):"})
	for _, c := range []*cobra.Command{newServeCmd(), newCheckCmd(), newRenderCmd(), newAnalyzeCmd(), newBenchCmd()} {
		c.GroupID = "mesh"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newProxyStatusCmd(), newConfigDumpCmd(), newTenantsCmd(), newHistoryCmd(),
		newRollbackCmd(), newUnpinCmd(), newRolloutCmd(), newDNSCmd(), newMembersCmd()} {
		c.GroupID = "ops"
		root.AddCommand(c)
	}
	root.AddCommand(newVersionCmd(), newBenchServerCmd())
	return root
}

func main() {
	err := run(os.Args[1:])
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "xdshard:", ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "xdshard:", err)
	os.Exit(exitFailed)
}

// run runs one command line (without the program name).
func run(args []string) error {
	root := newRootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err != nil && strings.HasPrefix(err.Error(), "required flag") {
		return fmt.Errorf("%s: %w; see '%s --help'", cmd.CommandPath(), err, cmd.CommandPath())
	}
	return err
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "xdshard", version)
			return nil
		},
	}
}

// noArgs refuses arguments with a hint at the flag meant.
func noArgs(hint string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%s takes no arguments, got %q; %s", cmd.Name(), args, hint)
		}
		return nil
	}
}
