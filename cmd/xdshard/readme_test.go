package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
)

// TestREADMECommandsParse finds every xdshard command the README gives (in
// code spans, and on the lines of its code blocks) and checks it against
// the real command tree: the subcommand exists and every flag it names is
// one that command takes. A renamed or removed command or flag fails here
// instead of rotting in the README. (The commands are parsed, not run:
// serve, check, render and analyze run in this package's other tests and
// in server/, the operations commands against a replica in
// admin_tls_test.go.)
func TestREADMECommandsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var commands []string
	span := regexp.MustCompile("`((?:go run ./cmd/|source <\\()?xdshard [a-z][^`\n]*)`")
	for _, m := range span.FindAllStringSubmatch(string(readme), -1) {
		commands = append(commands, m[1])
	}
	// In code blocks: the lines of sh blocks, and the "$ " lines of the
	// sessions (the other lines are output).
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
