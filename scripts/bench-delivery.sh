#!/usr/bin/env bash
# End-to-end event delivery: events POSTed to a topic route (wrk, SECONDS) are delivered
# by one subscription to a local endpoint (nginx answering 200); prints the ingest rate,
# and the end-to-end rate: events delivered / time from the first POST until the last
# delivery arrived.
#   scripts/bench-delivery.sh [SECONDS=10] [CONNECTIONS=32] [MAX_IN_FLIGHT=64]
# Needs nginx, wrk, curl, python3; CPU 0 runs wrk, CPU 1 Weir and nginx.
set -euo pipefail
secs=${1:-10}; conns=${2:-32}; inflight=${3:-64}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-delivery: $bin not found; cargo build --release -p weir" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-delivery.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
hook=$(port); proxy=$(port)
delivery_config "$dir" "$proxy" "$hook" $inflight
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"order.created","order":{"id":12345,"total":99.5}}'
wrk.headers["Content-Type"] = "application/json"
LUA
start_nginx_ok "$dir" "$hook" "$dir/deliveries.log"
WEIR_LOG=warn taskset -c 1 "$bin" serve --config "$dir/weir.yaml" > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null -X POST -d '{}' "http://127.0.0.1:$proxy/events/bench" && break; sleep 0.1; done
sleep 0.5; : > "$dir/deliveries.log"
start=$(python3 -c 'import time; print(time.time())')
out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$proxy/events/bench")
sent=$(echo "$out" | awk '/requests in/ {print $1}')
rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
for _ in $(seq 600); do
  got=$(wc -l < "$dir/deliveries.log")
  [ "$got" -ge "$sent" ] && break
  sleep 0.1
done
python3 - "$start" "$sent" "$rate" "$dir/deliveries.log" <<'PY'
import sys
start, sent, rate, log = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
times = [float(l) for l in open(log) if l.strip()]
last = max(times) if times else start
print(f"ingested {sent} events at {rate:.0f}/s; delivered {len(times)} by {last - start:.2f} s after the first POST: {len(times) / (last - start):.0f} events/s end to end")
PY
