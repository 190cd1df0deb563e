//go:build race

package bench

// raceEnabled: the race detector slows a 10,000-stream soak past its
// deadline; scripts/test.sh runs the soak apart, without it.
const raceEnabled = true
