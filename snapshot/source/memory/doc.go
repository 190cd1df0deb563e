// Package memory is a source whose mesh is held in memory: a set of
// objects as its initial state, then the changes its owner applies. The
// bench drives the replica it measures through it, and tests use it where
// the mesh is built in code. It imports the model only.
package memory
