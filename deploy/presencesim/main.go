// Command presencesim measures what presence costs Redis at scale, without sockets: it runs G
// simulated gateways, each a real presence.Redis store with its own id and Redis client, holding
// M connections each, against a real redis-server or Redis Cluster.
//
//	go run ./deploy/presencesim -start -gateways 100 -conns 10000 -victim-conns 50000 -churn 1000
//	go run ./deploy/presencesim -start-cluster 3 -gateways 100 -conns 10000
//	go run ./deploy/presencesim -redis redis://127.0.0.1:6379/0 -gateways 3 -conns 1000
//
// The run goes through phases, each measured by INFO deltas (Redis CPU, commands, used_memory,
// commandstats), client-side timings of the stores' round trips and SLOWLOG maxima:
// connect (every connection joins), steady (heartbeats and sweep checks only), ticks (10 ticks/s
// to one time-channel subscriber per gateway: the pub/sub fan-out), churn
// (connections replaced at -churn per second), crash (the first -crashes gateways die like
// kill -9 while churn goes on; the sweep of each is timed), restart (with -restart: the
// redis-server is killed and started again empty, and the write-back timed), then a check that
// presence holds exactly the live connections, and disconnect (every live gateway shuts down
// cleanly). It prints a summary, and with -json one JSON line after it. It stops by itself and
// kills only the servers it started. See Run for the details and store.go for how a crash is
// made.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/wsgw/wsgw/internal/cli"
)

func main() {
	cli.Main("presencesim", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("presencesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      Config
		cluster  string
		asJSON   bool
		maxTime  time.Duration
		jsonPath string
	)
	fs.StringVar(&cfg.RedisURL, "redis", "", "URL of a running standalone Redis (redis://host:port/db)")
	fs.StringVar(&cluster, "cluster", "", "comma-separated host:port of a running Redis Cluster's nodes")
	fs.BoolVar(&cfg.Start, "start", false, "start a redis-server (no persistence, a free loopback port) for the run")
	fs.IntVar(&cfg.StartCluster, "start-cluster", 0, "start a Redis Cluster of this many masters (no replicas) for the run")
	fs.IntVar(&cfg.Gateways, "gateways", 3, "simulated gateways, each a presence store with its own Redis client")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections per gateway")
	fs.IntVar(&cfg.VictimConns, "victim-conns", 0, "connections of the first gateway, the one whose sweep is timed (0: -conns)")
	fs.IntVar(&cfg.Crashes, "crashes", 1, "gateways that crash at once in the crash phase (the first ones; 0: no crash phase)")
	fs.Float64Var(&cfg.Churn, "churn", 100, "connections replaced per second (one leave and one join each) in the churn and crash phases")
	fs.Float64Var(&cfg.RampRate, "ramp-rate", 0, "joins per second while connecting, over all gateways (0: all at once)")
	fs.IntVar(&cfg.Users, "users", 0, "distinct users the connections are drawn from (0: half the connections)")
	fs.IntVar(&cfg.Subscribers, "subscribers", -1, "connections subscribed to the time channel after the steady phase: a ticks phase then publishes 10 ticks/s for 5 s (-1: one per gateway)")
	fs.IntVar(&cfg.Shards, "shards", 1, "PRESENCE_SHARDS")
	fs.StringVar(&cfg.Prefix, "prefix", "", "key prefix (default sim:, or {sim}: in Cluster mode); must hold no presence")
	fs.DurationVar(&cfg.TTL, "ttl", 15*time.Second, "PRESENCE_TTL: heartbeat TTL, refreshed and checked every TTL/3")
	fs.DurationVar(&cfg.Idle, "idle", 0, "length of the steady phase (default: -ttl, three heartbeat intervals)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the churn phase")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Minute, "longest wait for presence to reach an expected state (all joined, swept, exact, empty)")
	fs.BoolVar(&cfg.Restart, "restart", false, "kill the redis-server and start it again empty after the crash phase (needs -start)")
	fs.IntVar(&cfg.SlowlogUS, "slowlog-us", 100, "slowlog-log-slower-than during the run, µs (restored afterwards)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for started servers' files (default: a new temporary directory)")
	fs.DurationVar(&maxTime, "max-time", 15*time.Minute, "the whole run stops after this long, whatever it is doing")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON line after the summary")
	fs.StringVar(&jsonPath, "json-out", "", "also write the JSON report to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cluster != "" {
		for a := range strings.SplitSeq(cluster, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.ClusterAddrs = append(cfg.ClusterAddrs, a)
			}
		}
	}
	if cfg.Subscribers < 0 {
		cfg.Subscribers = cfg.Gateways
	}
	if cfg.Idle == 0 {
		cfg.Idle = cfg.TTL
	}
	if err := validate(cfg); err != nil {
		return err
	}
	cfg.Progress = stderr
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if rep != nil {
		rep.print(stdout)
		b, jerr := json.Marshal(rep)
		if jerr != nil {
			return errors.Join(err, jerr)
		}
		if asJSON {
			fmt.Fprintf(stdout, "%s\n", b)
		}
		if jsonPath != "" {
			if werr := os.WriteFile(jsonPath, append(b, '\n'), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	return err
}

// validate names the flag that is wrong.
func validate(c Config) error {
	sources := 0
	for _, set := range []bool{c.RedisURL != "", len(c.ClusterAddrs) > 0, c.Start, c.StartCluster > 0} {
		if set {
			sources++
		}
	}
	switch {
	case sources != 1:
		return errors.New("give exactly one of -redis, -cluster, -start, -start-cluster")
	case c.Gateways < 2:
		return errors.New("-gateways must be at least 2 (a crashed gateway needs a survivor to sweep it)")
	case c.Conns < 1:
		return errors.New("-conns must be at least 1")
	case c.Crashes < 0 || c.Crashes >= c.Gateways:
		return fmt.Errorf("-crashes must be between 0 and %d (-gateways - 1)", c.Gateways-1)
	case c.Churn < 0 || c.RampRate < 0:
		return errors.New("-churn and -ramp-rate must not be negative")
	case c.TTL < 100*time.Millisecond:
		return errors.New("-ttl must be at least 100ms")
	case c.Duration <= 0 || c.Idle <= 0 || c.Settle <= 0:
		return errors.New("-duration, -idle and -settle must be positive")
	case c.Restart && !c.Start:
		return errors.New("-restart needs -start: the simulator restarts only a redis-server it started")
	case c.Shards < 1:
		return errors.New("-shards must be at least 1")
	}
	return nil
}
