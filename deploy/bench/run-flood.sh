#!/usr/bin/env bash
# A socket flood from one address against one standalone gateway, for README.md's failure table:
# N WebSockets (default 21,000) from 127.0.9.2 under a 20,000-file limit, held 20 s, with /healthz
# probed every second (2 s timeout) for the whole run. Prints how many probes went unanswered,
# the refusals (ws_rejected_total), the accept errors and the gateway's warn lines.
#
#   deploy/bench/run-flood.sh [N]
#   GATEWAY_BIN=path deploy/bench/run-flood.sh     # another gateway binary (e.g. an older commit)
#
# Everything started here is killed by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-21000}
out=$(mktemp -d /tmp/flood.XXXXXX)
go build -o "$out/" ./gateway ./deploy/loadtest
[ -z "${GATEWAY_BIN:-}" ] || cp "$GATEWAY_BIN" "$out/gateway"
ulimit -n 20000
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

GATEWAY_ADDR="127.0.0.1:$port" "$out/gateway" >"$out/gateway.log" 2>&1 &
gw=$!; pids+=($gw)
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.05; done
echo "== flood: $n sockets from 127.0.9.2, ulimit -n 20000, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
"$out/loadtest" -url "ws://127.0.0.1:$port/ws" -pid "$gw" -mode idle -n "$n" -procs 2 -src 1 -src-base 127.0.9.2 \
  -hold 20s -inflight 200 -timeout 150s >"$out/loadtest.out" 2>&1 &
lt=$!; pids+=($lt)
start=${EPOCHREALTIME/./}
while kill -0 "$lt" 2>/dev/null; do
  t=$(( (${EPOCHREALTIME/./} - start) / 1000000 ))
  r=$(curl -s -o /dev/null -m 2 -w "%{http_code} %{time_total}" "http://127.0.0.1:$port/healthz" || true)
  echo "$t ${r:-000 2}"
  sleep 1
done >"$out/probes.txt"
wait "$lt" || true
awk '{ if ($2 != "200") { bad++; if (first == "") first = $1; last = $1 } else { ok++; if ($3 > mx) mx = $3 } }
  END { printf "healthz probes: %d answered (slowest %.3f s), %d unanswered within 2 s", ok, mx, bad
        if (bad) printf " (between t=%s s and t=%s s)", first, last; print "" }' "$out/probes.txt"
curl -s -m 5 "http://127.0.0.1:$port/metrics" | grep -E '^(ws_rejected_total|accept_errors_total|ws_connections_max)' || true
grep -E '^sockets|failures|^server' "$out/loadtest.out" || cat "$out/loadtest.out"
echo "gateway warn lines: $(grep -c 'level=WARN' "$out/gateway.log" || true)"
grep 'level=WARN' "$out/gateway.log" | head -3 || true
echo "logs and outputs in $out"
