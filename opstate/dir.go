package opstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/xdshard/xdshard/snapshot"
)

// Dir keeps decisions as files in a directory: TENANT.json, and beside it
// TENANT.pinned.pb.gz, the pinned snapshot. Each file is written whole
// and renamed into place.
type Dir string

var _ Keeper = Dir("")

// DirBeside is the directory serve keeps decisions in for manifests at
// config: a sibling named .NAME.xdshard-state, outside what is read as
// the mesh.
func DirBeside(config string) Dir {
	abs, err := filepath.Abs(config)
	if err != nil {
		abs = config
	}
	abs = filepath.Clean(abs)
	return Dir(filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".xdshard-state"))
}

// Where is the directory.
func (d Dir) Where() string { return string(d) }

func (d Dir) path(tenant, suffix string) string {
	return filepath.Join(string(d), url.PathEscape(tenant)+suffix)
}

// Keep writes (or removes) tenant's files.
func (d Dir) Keep(_ context.Context, dec Decision) error {
	rec, pin := d.path(dec.Tenant, ".json"), d.path(dec.Tenant, ".pinned.pb.gz")
	if dec.Empty() {
		for _, p := range []string{rec, pin} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return fmt.Errorf("keeping decisions in %s: %w", d, err)
	}
	if dec.Pinned != nil {
		b, err := snapshot.MarshalKept(dec.Pinned)
		if err != nil {
			return err
		}
		if err := writeFile(pin, b); err != nil {
			return err
		}
	} else if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := json.MarshalIndent(recordOf(dec), "", "  ")
	if err != nil {
		return err
	}
	return writeFile(rec, append(b, '\n'))
}

// Load reads every TENANT.json in the directory (none if it does not
// exist).
func (d Dir) Load(context.Context) ([]Decision, []error, error) {
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading kept decisions in %s: %w", d, err)
	}
	var out []Decision
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		p := filepath.Join(string(d), name)
		dec, err := d.read(p, strings.TrimSuffix(p, ".json")+".pinned.pb.gz")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (remove it to forget that decision)", p, err))
			continue
		}
		out = append(out, dec)
	}
	return out, errs, nil
}

func (d Dir) read(rec, pin string) (Decision, error) {
	b, err := os.ReadFile(rec)
	if err != nil {
		return Decision{}, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return Decision{}, err
	}
	var pinned []byte
	if r.Pinned != "" {
		if pinned, err = os.ReadFile(pin); err != nil {
			return Decision{}, err
		}
	}
	return r.decision(pinned)
}

// writeFile writes data to path through a temporary file renamed into
// place, so a reader never sees half of it.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
