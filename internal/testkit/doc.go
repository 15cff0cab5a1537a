// Package testkit is the one test-support package: it starts real redis-server processes
// (StartRedis, StartSentinel, StartCluster) on free loopback ports with no persistence, gives
// each test its own key namespace (Prefix, HashTagPrefix), lets tests that need an external
// program skip with a clear message when it is absent or fail under INTEGRATION=required (Need,
// Unavailable), checks for leaked goroutines (MainWithLeakCheck), and serves authentication
// tests: the table of bad tokens (BadTokens), an identity provider's rotating JWKS endpoint
// (StartJWKS) and a plain GET (HTTPGet).
//
// Cleanup kills exactly the processes a helper started, by PID. Nothing here is product code.
package testkit
