package server_test

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the operator page's screenshot to docs/operator-page.png")

// chromium is the headless Chromium scripts/chromium.sh provides
// (scripts/test.sh sets XDSHARD_CHROMIUM); under CI its absence fails.
func chromium(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("XDSHARD_CHROMIUM"); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath("chromium-headless-shell"); err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("XDSHARD_CHROMIUM is not set under CI: scripts/test.sh installs Chromium (scripts/chromium.sh) and sets it")
	}
	t.Skip("no headless Chromium: run scripts/chromium.sh, or set XDSHARD_CHROMIUM")
	return ""
}

// TestOperatorPageInChromium loads the admin address's / in a real
// headless Chromium, with the demo mesh plus a Service xdshard rejects and
// a file that does not parse, and three proxies: one synced, one that
// never answers (STALE) and one that rejects everything (ERROR). The page
// as Chromium rendered it lists the rejecting and the stale proxy before
// the synced one, with the rejection's text, shows the rejected object
// and the broken file, and plots the push stages; its screenshot is the
// README's (-update-screenshot writes it).
func TestOperatorPageInChromium(t *testing.T) {
	bin := chromium(t)
	dir := copyDemo(t)
	writeAtomic(t, filepath.Join(dir, "90-poison.yaml"), poisonService)
	writeAtomic(t, filepath.Join(dir, "91-broken.yaml"), "apiVersion: v1\nkind: [unterminated\n")
	r, _ := startReplicaLogged(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	synced := proxy.New("acme-web", "web-1", false)
	stale := proxy.New("initech", "stale-1", false)
	rejecting := proxy.New("globex", "nack-1", false)
	rejecting.NACK = true
	stale.Silent.Store(true)
	for _, p := range []*proxy.Proxy{synced, stale, rejecting} {
		go func() { _ = p.Run(ctx, conn) }()
	}
	select {
	case <-synced.Synced():
	case <-time.After(time.Minute):
		t.Fatal("the synced proxy never synced (hang check)")
	}
	eventually(t, "the stale and the rejecting proxy to be seen so", func() bool {
		var page bytes.Buffer
		get(t, r, "/", &page)
		return strings.Contains(page.String(), "STALE") && strings.Contains(page.String(), "simulated rejection")
	})

	out := t.TempDir()
	shot := filepath.Join(out, "page.png")
	url := "http://" + r.AdminAddr() + "/"
	args := []string{"--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1500"}
	cmd := exec.Command(bin, append(args, "--dump-dom", url)...)
	cmd.Dir = out
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --dump-dom: %v", bin, err)
	}
	page := string(dom)
	for _, want := range []string{
		"<h1>xdshard", "Service acme-web/huge", "left out", "91-broken.yaml",
		"simulated rejection", "STALE", "ERROR", "<svg", "Push time by stage",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page as Chromium rendered it lacks %q", want)
		}
	}
	at := func(node string) int {
		i := strings.Index(page, node)
		if i < 0 {
			t.Fatalf("proxy %s is not on the page", node)
		}
		return i
	}
	if r, s, ok := at(rejecting.NodeID()), at(stale.NodeID()), at(synced.NodeID()); !(r < s && s < ok) {
		t.Errorf("proxies in the order rejecting %d, stale %d, synced %d; want the rejecting one, then the stale one, then the synced one", r, s, ok)
	}

	cmd = exec.Command(bin, append(args, "--screenshot="+shot, url)...)
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s --screenshot: %v\n%s", bin, err, b)
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no screenshot: %v", err)
	}
	if *updateScreenshot {
		if err := os.WriteFile(filepath.Join("..", "docs", "operator-page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// get reads an admin page into w.
func get(t *testing.T, r *server.Replica, path string, w *bytes.Buffer) {
	t.Helper()
	resp, err := http.Get("http://" + r.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := w.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
	}
}
