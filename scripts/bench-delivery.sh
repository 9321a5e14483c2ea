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
nginx=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-delivery.XXXXXX")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hook=$(port); proxy=$(port)
mkdir -p "$dir/tmp"
cat > "$dir/hook.conf" <<CONF
worker_processes 1; daemon off; pid $dir/hook.pid; error_log $dir/hook.err warn;
events { worker_connections 4096; }
http { keepalive_requests 1000000; log_format t '\$msec';
  access_log $dir/deliveries.log t;
  client_body_temp_path $dir/tmp/b; proxy_temp_path $dir/tmp/p; fastcgi_temp_path $dir/tmp/f;
  uwsgi_temp_path $dir/tmp/u; scgi_temp_path $dir/tmp/s;
  server { listen 127.0.0.1:$hook; location / { return 200 "ok"; } } }
CONF
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: 127.0.0.1:$proxy }
workers: 1
access_log: off
data_dir: $dir/data
topics:
  bench: {}
routes:
  - { name: ingest, topic: bench, match: { paths: ["/events/bench"] } }
subscriptions:
  - { name: hook, topic: bench, endpoint: "http://127.0.0.1:$hook/hook", max_in_flight: $inflight }
YAML
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"order.created","order":{"id":12345,"total":99.5}}'
wrk.headers["Content-Type"] = "application/json"
LUA
taskset -c 1 "$nginx" -p "$dir" -e "$dir/hook.err" -c "$dir/hook.conf" & ngx=$!
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
