#!/usr/bin/env bash
# Durable ingest into the event queue (embedded, or WEIR_QUEUE: a redis://, nats:// or amqp:// URL),
# against Weir's own plain-proxy throughput in the same run. Starts an nginx upstream and Weir (release, one worker) with two routes on one
# listener: /proxy/* to nginx, and /events/bench to a topic; then alternates wrk runs:
# GET through the proxy, and POST of a small JSON event (each answered 202 only after the
# fsynced group commit). Prints req/s per run, medians, and the ratio.
#   scripts/bench-ingest.sh [SECONDS=10] [ROUNDS=3] [CONNECTIONS=64]
# Needs nginx, wrk, curl, python3; CPU 0 runs wrk, CPU 1 the servers.
set -euo pipefail
secs=${1:-10}; rounds=${2:-3}; conns=${3:-64}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-ingest: $bin not found; cargo build --release -p weir" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-ingest.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
up=$(port); proxy=$(port)
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: 127.0.0.1:$proxy }
workers: 1
access_log: off
data_dir: $dir/data
events: { backend: "${WEIR_QUEUE:-embedded}" }
upstreams:
  backend: { targets: [ { address: "127.0.0.1:$up" } ] }
topics:
  bench$$: {}
routes:
  - { name: proxy, upstream: backend, match: { paths: ["/proxy/*"] } }
  - { name: ingest, topic: bench$$, match: { paths: ["/events/bench"] } }
YAML
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"order.created","order":{"id":12345,"total":99.5}}'
wrk.headers["Content-Type"] = "application/json"
LUA
start_nginx_ok "$dir" "$up"
WEIR_LOG=warn taskset -c 1 "$bin" serve --config "$dir/weir.yaml" > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$proxy/proxy/x" >/dev/null && break; sleep 0.1; done
curl -sf -X POST -H 'content-type: application/json' -d '{}' "http://127.0.0.1:$proxy/events/bench" >/dev/null
run() {  # $1 = proxy|ingest
  if [ "$1" = proxy ]; then
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$proxy/proxy/x"
  else
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$proxy/events/bench"
  fi | awk '/Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF} END {print r, (e==""?0:e)}'
}
taskset -c 0 wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$proxy/proxy/x" > /dev/null
p=(); i=()
for r in $(seq "$rounds"); do
  read -r pr pe < <(run proxy); p+=("$pr")
  read -r ir ie < <(run ingest); i+=("$ir")
  echo "round $r: proxy $pr req/s ($pe errors), ingest $ir events/s ($ie non-202)"
done
python3 - "${p[@]}" -- "${i[@]}" <<'PY'
import statistics, sys
a = " ".join(sys.argv[1:]).split(" -- ")
p, i = ([float(x) for x in part.split()] for part in a)
mp, mi = statistics.median(p), statistics.median(i)
print(f"median: plain proxy {mp:.0f} req/s, durable ingest {mi:.0f} events/s, ingest/proxy {mi/mp:.3f}")
PY
