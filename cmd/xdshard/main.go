// Command xdshard is the one binary of xdshard: a sharded xDS/MCP control
// plane for large Istio meshes. This package is wiring only: flags,
// construction, Run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":        {"serve tenant snapshots over ADS (default: the embedded demo mesh)", serveCmd},
		"render":       {"print a tenant's snapshot as JSON, list tenants, or print generated policies as YAML", renderCmd},
		"analyze":      {"report Istio/NetworkPolicy disagreements and cross-tenant exposure", analyzeCmd},
		"check":        {"validate a config directory as serve would, for CI (exit 2 on errors)", checkCmd},
		"bench":        {"measure push latency under synthetic load against go-control-plane, in one run", benchCmd},
		"version":      {"print the version", versionCmd},
		"history":      {"list the versions a running replica keeps of a tenant, and which it serves", historyCmd},
		"rollback":     {"serve an earlier kept version of a tenant and pin it (new builds wait)", rollbackCmd},
		"unpin":        {"serve a tenant's newest version again after a rollback", unpinCmd},
		"rollout":      {"show, promote or abort a tenant's canary rollout (serve --rollout-percent)", rolloutCmd},
		"proxy-status": {"list a replica's proxies and each type's sync state, as istioctl proxy-status", proxyStatusCmd},
		"config-dump":  {"print what a connected proxy is served, as Envoy's config dump", configDumpCmd},
		"dns":          {"say what a proxy resolves a host to through its DNS name table, or why not", dnsCmd},
	}
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(exitOK)
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
}

func run(args []string) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(cmds)
		return nil
	}
	if args[0] == "bench-server" { // hidden: the child process of bench
		return benchServerCmd(args[1:])
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(cmds)
		return fmt.Errorf("unknown command %q; run 'xdshard help' for the list", args[0])
	}
	return c.run(args[1:])
}

func usage(cmds map[string]command) {
	var b strings.Builder
	b.WriteString("xdshard: a sharded xDS/MCP control plane for large Istio meshes\n\nUsage: xdshard COMMAND [flags]\n\nCommands:\n")
	for _, n := range slices.Sorted(maps.Keys(cmds)) {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nRun 'xdshard COMMAND -h' for a command's flags.\n")
	fmt.Fprint(os.Stderr, b.String())
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func versionCmd(args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Println("xdshard", version)
	return nil
}
