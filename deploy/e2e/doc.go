// Package e2e is the end-to-end suite: the real gateway, ticker and client programs, built once
// per test binary, against real redis-server processes (standalone, Sentinel and Cluster) and a
// real HAProxy, with in-process WebSocket clients that record every frame. It checks
// docs/PROTOCOL.md from the outside: identical ticks on every gateway, Fibonacci answers to the
// asker only, the presence hash, heartbeats and events, the sweep of a dead gateway, a drain and
// a rolling restart, a Redis restart, a ticker failover, HAProxy dying, a wedged or deaf
// subscription, a Sentinel failover, Redis Cluster, 1000 clients, and the README's first steps
// with wscat and redis-cli. The figures of README.md's failure table are the lines
// `go test -race -count=1 -v ./deploy/e2e | grep MEASURE` prints.
//
// The package has no API: everything is in its tests. -short skips it; a missing redis-server or
// haproxy skips a test (fails under INTEGRATION=required). A failed test prints the logs of its
// processes; E2E_LOGS=1 prints them for every test.
//
// # Adding a test
//
// Put it in the file of the kind of failure or feature it covers (redisfailure_test.go: Redis
// restarted, slow, its subscription cut or deaf; processloss_test.go: a gateway, HAProxy or the
// ticker lost; topology_test.go: Sentinel and Cluster), or in a new file named after a new kind,
// keeping each under 500 lines; and build it from the harness rather than writing another copy
// of any of it:
//
//   - startCluster(t, localcluster.Options{...}) starts redis-server, tickers, gateways and
//     HAProxy (NoLB: true skips HAProxy; RedisURL points the cluster at a Redis of the test's
//     own, e.g. behind a proxy) with the package's short settings (baseEnv) and stops it when the
//     test ends. Its Gateways, Tickers, LB and Redis are localcluster.Procs to Kill, Term and
//     Start again.
//   - startGateway, startTicker and startProc run one program outside a cluster (Sentinel,
//     Cluster, a ticker with a known id), through the same localcluster.Proc; startInteractive
//     runs one whose stdin must stay open (wscat, the client program).
//   - dial(t, addr, user) connects one client to a gateway; startClients connects many, through
//     HAProxy, optionally redialing like the terminal client. A client's ticks, snapshot,
//     history, waitTick, fibRoundTrip and checkTicks read what it received; startTermClient runs
//     the real client program.
//   - waitFor(t, timeout, what, cond) is the one poll loop: it fails the test with cond's last
//     error, at once when cond wraps errStop.
//   - readPresence/presence, presenceMatches, heartbeat and subscribeEvents (with checkLeaves)
//     read Redis under the names of pkg/rediskey (keys, clusterKeys).
//   - measure(t, name, ...) logs a figure as "MEASURE name: value" for README.md's table.
//
// Assert the contract's figure (ticks lost, seconds unready, presence exact, one leave per
// connection), with margins for a loaded two-core machine.
package e2e
