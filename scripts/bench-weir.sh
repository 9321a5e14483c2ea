#!/usr/bin/env bash
# Starts Weir as a plain reverse proxy for ../shared/bench/proxy-bench.sh:
#   bench-weir.sh LISTEN UPSTREAM
# Writes a config for those two addresses and execs `weir serve`. Workers follow
# BENCH_WORKERS (set by proxy-bench.sh to the number of server CPUs).
set -euo pipefail
listen=${1:?usage: bench-weir.sh LISTEN UPSTREAM}
upstream=${2:?usage: bench-weir.sh LISTEN UPSTREAM}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-weir: $bin not found; build it with: cargo build --release -p weir" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench.XXXXXX")
cat > "$dir/weir.yaml" <<YAML
listen:
  proxy: $listen
workers: ${BENCH_WORKERS:-1}
access_log: off
upstreams:
  backend:
    targets: [ { address: "$upstream" } ]
routes:
  - name: all
    match: { paths: ["/*"] }
    upstream: backend
YAML
cd "$here"
exec "$bin" serve --config "$dir/weir.yaml" --log warn
