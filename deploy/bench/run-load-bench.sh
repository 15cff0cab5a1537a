#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md: a gateway in cluster mode (real redis-server,
# one ticker, presence in Redis) measured by deploy/loadtest over loopback. One fresh gateway
# per run, so each RSS baseline is a fresh process. Everything started here is killed by PID.
#
#   deploy/bench/run-load-bench.sh [RUN ...]     RUN: idle10k idle19k storm10k ticks10k fib90 fibrand
#                                                 scale50k scale50k-lb (default: all but the scale runs);
#                                                 MODE=standalone for no Redis
#
# scale50k: three gateways in cluster mode hold 50,001 sockets together (16,667 each, one load
# process per gateway, since one process may open at most 20,000 files here), every socket
# checked for every tick.
# scale50k-lb: the same 50,001 sockets through HAProxy: `deploy/cluster up -lb-procs 6` (Redis,
# two tickers, three gateways, six single-threaded HAProxy processes on one port, since each
# proxies at most ~9,500 connections under that limit), three load processes, 300 handshakes/s.
# Extra gateway settings come from the environment, e.g. GOMEMLIMIT=600MiB deploy/bench/...
# GATEWAY_BIN=path measures another gateway binary (e.g. one built from an older commit, to
# compare before and after back to back).
#
# The floor: idle10k, idle19k, storm10k and ticks10k also run, right after the gateway and with
# the same load settings, against deploy/bench/floor (the simplest coder/websocket server: one
# reader and one writer goroutine per socket, a map under a mutex, each tick's bytes from the
# same Redis `ws:time` handed to every socket; in standalone mode it runs its own 1 s ticker),
# and print the gateway's figure, the floor's and their ratio. FLOOR=0 skips it. Absolute
# figures depend on the machine and on what else runs on it; the ratios of one run do less.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d /tmp/loadbench.XXXXXX)
go build -o "$out/" ./gateway ./ticker ./deploy/loadtest ./deploy/cluster ./deploy/bench/floor
[ -z "${GATEWAY_BIN:-}" ] || cp "$GATEWAY_BIN" "$out/gateway"
ulimit -n "$(ulimit -Hn)"
runs=("$@"); [ ${#runs[@]} -gt 0 ] || runs=(idle10k idle19k storm10k ticks10k fib90 fibrand)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ ! -f "$out/c50/state.json" ] || "$out/cluster" down -dir "$out/c50" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

redis_env=()
if [ "${MODE:-cluster}" = cluster ]; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --maxclients 100000 >"$out/redis.log" 2>&1 &
  pids+=($!)
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
  # The environment's extra settings are the gateway's: the ticker reads ADMIN_ADDR too, and
  # would take the gateway's admin port.
  env -u ADMIN_ADDR REDIS_URL="redis://127.0.0.1:$rport/0" "$out/ticker" >"$out/ticker.log" 2>&1 &
  pids+=($!)
  redis_env=(REDIS_URL="redis://127.0.0.1:$rport/0")
fi

# MAX_CONNECTIONS: the default (open-file limit - 1024 = 18,976 under 20,000 files) would refuse
# the end of idle19k; the benchmark wants the sockets, not the health-check headroom. HAProxy's
# per-source limits are off in `deploy/cluster up` (every socket comes from loopback).
start_gateway() { # NAME PORT: starts a gateway, sets $gw
  env "${redis_env[@]}" GATEWAY_ADDR="127.0.0.1:$2" GATEWAY_ID="bench-$1" FIB_RATE=100000 FIB_BURST=100000 \
    MAX_CONNECTIONS="${MAX_CONNECTIONS:-19500}" "$out/gateway" >"$out/$1.gw.log" 2>&1 &
  gw=$!; pids+=($gw)
  until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null; do sleep 0.05; done
}

start_floor() { # NAME PORT: starts the floor server, sets $fl
  "$out/floor" -addr "127.0.0.1:$2" ${rport:+-redis "redis://127.0.0.1:$rport/0"} >"$out/$1.floor.log" 2>&1 &
  fl=$!; pids+=($fl)
  until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null; do sleep 0.05; done
}

# compare GATEWAY_OUT FLOOR_OUT: gateway, floor and ratio for each figure both runs have, with
# the target ratio where there is one.
compare() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.startswith("{")][-1]
g, f = load(sys.argv[1]), load(sys.argv[2])
def get(r, *path):
    for k in path:
        r = (r or {}).get(k)
    return r
rows = [
    ("RSS per socket (KiB)", ("server", "rss_per_socket_kib"), ("server", "rss_per_socket_kib"), 0.5),
    ("CPU per delivered tick (us)", ("server", "cpu_per_tick_us"), ("server", "cpu_per_tick_us"), 0.75),
    ("tick p99 (ms)", ("ticks", "latency", "p99_ms"), ("ticks", "latency", "p99_ms"), 0.8),
    ("open (s)", ("open_s",), ("open_s",), None),
    ("gateway open+presence vs floor open (s)", ("present_s",), ("open_s",), 1.0),
]
print("%-42s %10s %10s %7s  %s" % ("figure", "gateway", "floor", "ratio", "target"))
for name, gp, fp, target in rows:
    gv, fv = get(g, *gp), get(f, *fp)
    if not gv or not fv:
        continue
    r = gv / fv
    t = "" if target is None else ("<= %.2f %s" % (target, "met" if r <= target else "NOT met"))
    print("%-42s %10.2f %10.2f %7.2f  %s" % (name, gv, fv, r, t))
PY
}

# load_and_stop PID PORT OUTFILE LOADTEST-ARGS...: one loadtest run against the server PID
# listening on PORT, its output kept in OUTFILE, then the server stopped. A fresh block of
# source addresses per run keeps clear of the last run's TIME_WAIT sockets.
src=2
load_and_stop() {
  local pid=$1 port=$2 outfile=$3
  shift 3
  "$out/loadtest" -url "ws://127.0.0.1:$port/ws" -pid "$pid" -src-base "127.0.$src.2" -json "$@" | tee "$outfile"
  src=$((src + 1))
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for run in "${runs[@]}"; do
  if [ "$run" = scale50k ]; then
    echo "== scale50k (${MODE:-cluster}) loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    lts=(); gws=()
    for i in 1 2 3; do
      port=$(free_port); start_gateway "scale$i" "$port"; gws+=($gw)
      "$out/loadtest" -url "ws://127.0.0.1:$port/ws" -pid "$gw" -src-base "127.0.$src.2" -src 2 -json \
        -mode ticks -n 16667 -inflight 100 -duration 10s -timeout 5m >"$out/scale$i.out" 2>&1 &
      lts+=($!); src=$((src + 3))
    done
    for p in "${lts[@]}"; do wait "$p"; done
    for i in 1 2 3; do echo "-- gateway $i"; grep -vE '^\{' "$out/scale$i.out"; done
    kill "${gws[@]}"; wait "${gws[@]}" 2>/dev/null || true
    continue
  fi
  if [ "$run" = scale50k-lb ]; then
    echo "== scale50k-lb: 3 gateways behind 6 HAProxy processes, cluster mode, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    lbport=$(free_port)
    "$out/cluster" up -dir "$out/c50" -lb-port "$lbport" -lb-procs 6 >"$out/c50.up.log" 2>&1 || { cat "$out/c50.up.log"; exit 1; }
    gwpids=$(python3 -c 'import json,sys; print(",".join(str(p["pid"]) for p in json.load(open(sys.argv[1]))["procs"] if p["kind"] == "gateway"))' "$out/c50/state.json")
    # -grace 8s: on two saturated cores the last ticks of the window arrive seconds late.
    "$out/loadtest" -url "ws://127.0.0.1:$lbport/ws" -pid "$gwpids" -src-base "127.0.$src.2" -json \
      -mode ticks -n 50001 -procs 3 -rate 300 -inflight 150 -duration 30s -grace 8s -timeout 10m || true
    "$out/cluster" down -dir "$out/c50"
    src=$((src + 6))
    continue
  fi
  case $run in
    idle10k)  args=(-mode idle -n 10000 -hold 10s) ;;
    idle19k)  args=(-mode idle -n 19000 -hold 10s) ;;
    storm10k) args=(-mode storm -n 10000 -inflight 200 ${redis_env:+-redis "redis://127.0.0.1:$rport/0"}) ;;
    ticks10k) args=(-mode ticks -n 10000 -duration 10s) ;;
    fib90)    args=(-mode fib -n 100 -fib-n 90 -duration 10s) ;;
    fibrand)  args=(-mode fib -n 100 -fib-max 10000 -duration 10s) ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  port=$(free_port)
  start_gateway "$run" "$port"
  echo "== $run (${MODE:-cluster}) loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  load_and_stop "$gw" "$port" "$out/$run.out" "${args[@]}"
  case $run in idle10k|idle19k|storm10k|ticks10k) ;; *) continue ;; esac
  [ "${FLOOR:-1}" != 0 ] || continue
  fargs=()
  for a in "${args[@]}"; do [[ $a == -redis || $a == redis://* ]] || fargs+=("$a"); done # the floor has no presence
  port=$(free_port)
  start_floor "$run" "$port"
  echo "== $run against the floor (${MODE:-cluster}) loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  load_and_stop "$fl" "$port" "$out/$run.floor.out" "${fargs[@]}"
  echo "-- $run: gateway vs floor, same load settings, back to back"
  compare "$out/$run.out" "$out/$run.floor.out"
done
echo "logs and outputs in $out"
