// Package xdshard is the root of the module: a horizontally sharded xDS /
// MCP control plane for large Istio meshes. It holds no code, only the
// test that keeps the tree's import rules (layout_test.go); the packages
// below it are the pipeline's stages, as DESIGN's layout table and the
// README's package table list them.
package xdshard
