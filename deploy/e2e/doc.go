// Package clustertest holds the end-to-end tests of cluster mode ("Cluster mode" issue): the
// real gateway and ticker programs, built once per test binary, against real redis-server
// processes (standalone, Sentinel and Cluster), with in-process WebSocket clients reading every
// frame. They check PROTOCOL.md from the outside: identical ticks on every gateway, Fibonacci
// answers to the asker only, the presence hash, heartbeats and events, the sweep of a dead
// gateway, a drain, a Redis restart, a ticker failover, a wedged subscription and the /readyz
// canary, a Sentinel failover and Redis Cluster.
//
// The package has no API: everything is in its tests. Processes come from deploy/localcluster
// (standalone Redis) or are started directly (Sentinel, Cluster, tickers with a known id) and
// are killed by PID when the test ends. A failed test prints the logs of its processes;
// CLUSTERTEST_LOGS=1 prints them for every test. -short skips the package.
package e2e
