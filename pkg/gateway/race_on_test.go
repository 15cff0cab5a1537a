//go:build race

package gateway

// raceEnabled: the race detector slows everything 5–10×, so latency bounds are only logged
// under it; .ci/run also runs the latency tests without -race, where the bound applies.
const raceEnabled = true
