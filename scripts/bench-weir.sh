#!/usr/bin/env bash
# Starts Weir for ../shared/bench/proxy-bench.sh:
#   bench-weir.sh LISTEN UPSTREAM [plain|auth|auth-redis]
# Writes a config for those two addresses and execs `weir serve`. Workers follow
# BENCH_WORKERS (set by proxy-bench.sh to the number of server CPUs).
#   plain       a route straight to the upstream
#   auth        key_auth (one consumer) + an in-memory rate_limit keyed by consumer
#   auth-redis  the same with the rate limit kept in Redis (BENCH_REDIS, default
#               redis://127.0.0.1:6379)
# The policy variants need the API key on every request: run proxy-bench.sh with
# scripts/bench/ first in PATH, whose `wrk` and `curl` add `x-api-key: $BENCH_API_KEY`.
set -euo pipefail
listen=${1:?usage: bench-weir.sh LISTEN UPSTREAM [plain|auth|auth-redis]}
upstream=${2:?usage: bench-weir.sh LISTEN UPSTREAM [plain|auth|auth-redis]}
variant=${3:-plain}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-weir: $bin not found; build it with: cargo build --release -p weir" >&2; exit 2; }
key=${BENCH_API_KEY:-bench-key-0123456789abcdef}
case "$variant" in
    plain) policies="[]" ;;
    auth) policies="[ { key_auth: {} }, { rate_limit: { key: consumer, limit: 1000000000, per: 1s } } ]" ;;
    auth-redis) policies="[ { key_auth: {} }, { rate_limit: { key: consumer, limit: 1000000000, per: 1s, store: \"${BENCH_REDIS:-redis://127.0.0.1:6379}\" } } ]" ;;
    *) echo "bench-weir: unknown variant $variant (plain, auth, auth-redis)" >&2; exit 2 ;;
esac
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench.XXXXXX")
cat > "$dir/weir.yaml" <<YAML
listen:
  proxy: $listen
workers: ${BENCH_WORKERS:-1}
access_log: off
consumers:
  - { name: bench, credentials: [ { type: key, key: "$key" } ] }
upstreams:
  backend:
    targets: [ { address: "$upstream" } ]
routes:
  - name: bench-$variant
    match: { paths: ["/*"] }
    upstream: backend
    policies: $policies
YAML
cd "$here"
exec "$bin" serve --config "$dir/weir.yaml" --log warn
