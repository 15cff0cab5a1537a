// Package testkit is the one test-support package: it starts real redis-server processes
// (StartRedis, StartSentinel, StartCluster; the processes are internal/redisserver's, which
// deploy/presencesim runs too) on free loopback ports with no persistence, gives
// each test its own key namespace (Prefix, HashTagPrefix), lets tests that need an external
// program skip with a clear message when it is absent or fail under INTEGRATION=required (Need,
// Unavailable), checks for leaked goroutines (MainWithLeakCheck), polls until a condition holds
// (Eventually), gives a buffer a child process and a test can share (SyncBuffer), and an
// additions-only Fibonacci oracle (Fib), and serves authentication tests: the table of bad
// tokens (BadTokens), an identity provider's rotating JWKS endpoint (StartJWKS) and a plain GET
// (HTTPGet). The end-to-end harness lives in deploy/e2e; an in-process gateway for tests
// outside pkg/gateway lives in testkit/standalone, since testkit imports no product package.
//
// Cleanup kills exactly the processes a helper started, by PID. Nothing here is product code.
package testkit
