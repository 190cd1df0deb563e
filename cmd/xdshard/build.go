package main

import (
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

// buildTenant is the one BuildFunc `serve` and `render` share.
func buildTenant(v *model.TenantView) (*snapshot.Snapshot, error) {
	return translate.Compose(v)
}

func renderJSON(s *snapshot.Snapshot, views ...snapshot.View) ([]byte, error) {
	return xds.RenderJSON(s, views...)
}
