package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/proxy"
)

// TestREADMECommandsParse finds every xdshard command the README gives (in
// code spans, and on the lines of its code blocks) and checks it against
// the real command tree: the subcommand exists and every flag it names is
// one that command takes. A renamed or removed command or flag fails here
// instead of rotting in the README. TestREADMECommandsRun runs them.
func TestREADMECommandsParse(t *testing.T) {
	commands := readmeCommands(t)
	root := newRootCmd()
	root.InitDefaultCompletionCmd() // cobra adds these when it executes
	root.InitDefaultHelpCmd()
	for _, c := range commands {
		args := readmeArgs(c)
		if len(args) == 0 {
			continue
		}
		cmd, rest, err := root.Find(args)
		if err != nil || cmd == root {
			t.Errorf("README: %q: no such command (%v)", c, err)
			continue
		}
		for _, a := range rest {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
			if name == "help" || name == "h" || flagOf(cmd, name) {
				continue
			}
			t.Errorf("README: %q: %s takes no flag %q", c, cmd.CommandPath(), a)
		}
	}
}

// TestREADMECommandsRun runs every command the README gives, as it gives
// it, against a replica serving the demo mesh with a connected proxy: the
// placeholders are filled (DIR the demo's directory, PROXY and POD.NS the
// proxy, HOST a name), --admin-addr is added where the command takes it,
// and the README's order is kept (history, then rollback, then unpin).
// Each must do what the README says: exit 0, or the exit code the README
// gives for what it reports (dns 3 for a name that does not resolve,
// analyze 3 for findings), or, for promote and abort with no rollout
// under way, say so. Not run here: serve, whose forms the replica itself
// and the tests of serve and of sharding run; bench, which the bench
// package's tests run; and the example of a TLS replica at a pod IP,
// which admin_tls_test.go runs against a TLS replica.
func TestREADMECommandsRun(t *testing.T) {
	r, dir := serveDemoDir(t)
	// A second version of acme, so the README's rollback has one to go back to.
	before := r.Store().Current("acme").Version
	if err := os.WriteFile(filepath.Join(dir, "readme-test.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata: {name: readme, namespace: acme-web}\nspec: {ports: [{name: http, port: 8080}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "acme's second version", func() bool { return r.Store().Current("acme").Version != before })
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := proxy.New("acme-web", "web-1", false)
	go func() { _ = p.Run(t.Context(), conn) }()
	select {
	case <-p.Synced():
	case <-time.After(time.Minute):
		t.Fatal("the proxy never synced (hang check)")
	}
	fill := strings.NewReplacer("DIR", dir, "PROXY", "web-1.acme-web", "POD.NS", "web-1.acme-web", "HOST", "web.acme-web.svc.cluster.local")
	root := newRootCmd()
	ran := 0
	for _, c := range readmeCommands(t) {
		args := readmeArgs(c)
		if len(args) == 0 {
			continue
		}
		switch {
		case args[0] == "serve", args[0] == "bench", slices.Contains(args, "10.0.3.7:15014"):
			continue // see the comment above
		}
		for i := range args {
			args[i] = fill.Replace(args[i])
		}
		if cmd, _, err := root.Find(args); err == nil && flagOf(cmd, "admin-addr") && !slices.Contains(args, "--admin-addr") {
			args = append(args, "--admin-addr", r.AdminAddr())
		}
		var err error
		out := captureStdout(t, func() error { err = run(args); return nil })
		var ee *exitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.code == exitFindings && (args[0] == "dns" || args[0] == "analyze"):
		case len(args) > 1 && args[0] == "rollout" && (args[1] == "promote" || args[1] == "abort") && strings.Contains(err.Error(), "no version in rollout"):
		default:
			t.Errorf("README: %q (run as %q): %v\n%s", c, args, err, out)
		}
		if args[0] == "rollback" && !strings.Contains(out, "pinned; new builds wait until: xdshard unpin --tenant acme") {
			t.Errorf("README: %q printed\n%s\nnot what the README shows", c, out)
		}
		t.Logf("ran %q", args)
		ran++
	}
	if ran < 12 {
		t.Fatalf("ran %d of the README's commands", ran)
	}
}

// waitUntil waits for ok, failing only on a hang.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute (hang check)", what)
		}
	}
}

// readmeCommands finds every xdshard command the README gives: in code
// spans, and on the lines of its sh code blocks and the "$ " lines of its
// sessions (the other lines are output).
func readmeCommands(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var commands []string
	span := regexp.MustCompile("`((?:go run ./cmd/|source <\\()?xdshard [a-z][^`\n]*)`")
	for _, m := range span.FindAllStringSubmatch(string(readme), -1) {
		commands = append(commands, m[1])
	}
	inBlock, sh := false, false
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "```") {
			inBlock, sh = !inBlock, line == "```sh"
			continue
		}
		l, prompt := strings.CutPrefix(strings.TrimSpace(line), "$ ")
		if inBlock && (sh || prompt) && (strings.HasPrefix(l, "xdshard ") || strings.HasPrefix(l, "go run ./cmd/xdshard ")) {
			commands = append(commands, l)
		}
	}
	if len(commands) < 15 {
		t.Fatalf("found %d commands in the README; the pattern no longer finds them", len(commands))
	}
	return commands
}

// readmeArgs is a README command's arguments after "xdshard": optional
// brackets opened, a trailing comment and a line continuation dropped.
func readmeArgs(c string) []string {
	c = strings.SplitN(c, " #", 2)[0]
	_, c, ok := strings.Cut(c, "xdshard ")
	if !ok {
		return nil
	}
	var out []string
	for _, f := range strings.Fields(strings.NewReplacer("[", " ", "]", " ", "\\", " ").Replace(c)) {
		if f == "|" || f == ")" {
			break
		}
		out = append(out, strings.TrimSuffix(f, ")"))
	}
	return out
}

func flagOf(cmd *cobra.Command, name string) bool {
	if len(name) == 1 {
		return cmd.Flags().ShorthandLookup(name) != nil || cmd.InheritedFlags().ShorthandLookup(name) != nil
	}
	return cmd.Flags().Lookup(name) != nil || cmd.InheritedFlags().Lookup(name) != nil
}

// TestDocLinksResolve checks every relative link of the README and docs/
// names a file that exists and, with a #fragment, a heading of that file
// (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens).
// Moving a section from the README to docs/ broke links into it before.
func TestDocLinksResolve(t *testing.T) {
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := f
			if path != "" {
				dest = filepath.Join(filepath.Dir(f), path)
			}
			body, err := os.ReadFile(dest)
			if err != nil {
				t.Errorf("%s: link %q: %v", filepath.Base(f), target, err)
				continue
			}
			if frag != "" && !slices.Contains(anchors(string(body)), frag) {
				t.Errorf("%s: link %q: %s has no heading with that anchor", filepath.Base(f), target, filepath.Base(dest))
			}
		}
	}
}

// anchors lists the GitHub anchors of a Markdown file's headings.
func anchors(md string) []string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock
		}
		if inBlock || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}
