// Package deploytest holds no code, only tests: they check the deployment files (Dockerfiles,
// docker-compose.yml, the HAProxy config) against each other, against go.mod and against the
// contract in PROTOCOL.md, because no Docker engine runs in CI to catch a broken one.
//
//	go test ./deploy/deploytest                                 # check
//	go test ./deploy/deploytest -run TestHAProxyGolden -update  # rewrite deploy/haproxy/haproxy.cfg
//
// The HAProxy tests need the haproxy binary; they skip without it, or fail when
// INTEGRATION=required.
package deploytest
