#!/usr/bin/env bash
# Instructions per request under callgrind: a release Weir (one worker, access log off, or
# CG_ACCESS_LOG=stdout for the default; CG_KEEP=DIR keeps the callgrind files)
# with a plain route and a key-auth route to an nginx upstream, run under
# `valgrind --tool=callgrind` twice — once serving FEW requests, once MANY, each on one
# keep-alive connection — so the difference over (MANY - FEW) is the cost of one request
# without start-up. Only the worker thread is counted (the busiest of the per-thread
# files), so timers elsewhere in the process (samplers, health checks) that run in
# proportion to wall time under valgrind do not blur the figure. Instruction counts repeat
# on the same binary and inputs whatever else the machine does, so two builds compare.
#   scripts/callgrind-requests.sh [KIND=proxied] [FEW=200] [MANY=1200]
#   KIND: proxied | bad-key | no-route | too-large
# WEIR_BIN picks the binary (default: the release build). Needs valgrind, nginx, python3.
set -euo pipefail
kind=${1:-proxied}; few=${2:-200}; many=${3:-1200}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "callgrind-requests: build first: cargo build --release -p weir" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "callgrind-requests: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-callgrind.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
up=$(port)
start_nginx_ok "$dir" "$up"
trap 'kill $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

run() { # N: a run serving N requests, its callgrind files in $dir/cg.N-*
  local n=$1 px; px=$(port)
  cat > "$dir/weir.yaml" <<YAML
listen: { proxy: "127.0.0.1:$px" }
workers: 1
access_log: ${CG_ACCESS_LOG:-off}
data_dir: $dir/data
upstreams:
  up: { targets: [ { address: "127.0.0.1:$up" } ] }
consumers:
  - { name: app, credentials: [ { type: key, key: "cg-key-00000000000000000" } ] }
routes:
  - { name: plain, match: { paths: [/plain] }, upstream: up }
  - { name: keyed, match: { paths: [/keyed] }, upstream: up, max_body_size: 1KiB, policies: [ { key_auth: {} } ] }
YAML
  valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --callgrind-out-file="$dir/cg.$n" "$bin" serve --config "$dir/weir.yaml" --log error \
    > "$dir/weir.$n.log" 2>&1 &
  local vg=$!
  python3 - "$px" "$n" "$kind" <<'PY'
import http.client, sys, time
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); c.request("GET", "/plain"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.1)
def one(c):
    if kind == "proxied":
        c.request("GET", "/keyed", headers={"x-api-key": "cg-key-00000000000000000"})
    elif kind == "bad-key":
        c.request("GET", "/keyed", headers={"x-api-key": "cg-key-wrong-000000000000"})
    elif kind == "no-route":
        c.request("GET", "/nowhere")
    else:
        c.request("POST", "/keyed", body=b"x" * 2048, headers={"x-api-key": "cg-key-00000000000000000"})
    r = c.getresponse(); r.read()
    return r.getheader("connection") == "close"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for _ in range(n):
    if one(c):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
PY
  kill -INT $vg; wait $vg 2>/dev/null || true
}
total() { awk '/^summary:|^totals:/ {print $2; exit}' "$1"; }

run "$few"; run "$many"
# The worker is the busiest thread of the MANY run; the same thread number in the FEW run
# (threads start in the same order), not that run's busiest, which may be the main thread.
worker=$(for f in "$dir/cg.$many"-*; do echo "$(total "$f") ${f##*-}"; done | sort -n | tail -1 | cut -d' ' -f2)
a=$(total "$dir/cg.$few-$worker"); b=$(total "$dir/cg.$many-$worker")
[ -n "${CG_KEEP:-}" ] && cp "$dir"/cg.* "$CG_KEEP"/
echo "callgrind $kind: $few requests $a, $many requests $b instructions"
echo "per request: $(( (b - a) / (many - few) )) instructions ($kind, $(basename "$bin"))"
