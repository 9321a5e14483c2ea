#!/usr/bin/env bash
# Abuse soak: a release Weir with a key-auth proxy route, an AI route, and a topic route
# with one subscription, in front of one nginx (upstream, fake OpenAI-compatible provider,
# webhook sink logging each delivered event id), takes legitimate traffic alone (the
# baseline), then the same traffic mixed with bad keys at a high rate, thousands of idle
# connections, slowloris heads and bodies, oversized and deeply nested JSON on AI and topic
# routes, header floods and HTTP/2 rapid resets (scripts/abuse-soak.py). Checks: Weir stays
# alive under an RSS ceiling, every acknowledged event is delivered, every abusive request
# gets its documented answer, legitimate requests all succeed with p99 within 2x of the
# baseline. Loopback only; Weir and nginx on CPU 1, the load on CPU 0. The full run first
# measures the keyed route's peak (wrk, 5 s, while the events and AI calls run) and sends
# legitimate proxy traffic at half of it with weir-load (open loop, at a real-time priority
# so the abusers beside it on CPU 0 do not count as Weir's latency); that traffic's p99 is
# the one held to 2x.
#   scripts/abuse-soak.sh [SECONDS]  the full run: SECONDS (600) of abuse after a 60 s baseline
#   scripts/abuse-soak.sh --ci       45 s at low rates (what CI runs; latency reported only)
# Needs nginx and python3; WEIR_BIN picks the binary (default: the release build).
# ABUSE_SOAK_ARGS overrides abuse-soak.py's rates, e.g. "--hostile-rate 0" to see what one
# kind of abuse costs alone (a kind sent none of then fails the run's checks, as it should).
set -euo pipefail
mode=${1:-600}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "abuse-soak: build first: cargo build --release -p weir" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "abuse-soak: needs nginx (apt-get install nginx)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
. "$here/bench-lib.sh"
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-soak.XXXXXX")
up=$(port); px=$(port); ad=$(port)
mkdir -p "$dir/t"
# Run in the background with `&`: exec keeps the process id the program's own.
pin() { if [ "$(nproc)" -ge 2 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
cat > "$dir/up.conf" <<CONF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $dir/t/b;
  proxy_temp_path $dir/t/p; fastcgi_temp_path $dir/t/f; uwsgi_temp_path $dir/t/u; scgi_temp_path $dir/t/s;
  log_format ids '\$http_webhook_id';
  server { listen 127.0.0.1:$up; default_type application/json;
    location /api/ { return 200 '{"items":[]}'; }
    location /hook { access_log $dir/delivered.log ids; return 204; }
    location /v1/ { return 200 '{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}'; } } }
CONF
pin 1 "$nginx" -p "$dir" -c "$dir/up.conf" & ngx=$!
# The configuration a user would write: defaults everywhere but the routes.
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: "127.0.0.1:$px", admin: "127.0.0.1:$ad" }
access_log: off
data_dir: $dir/data
upstreams:
  api: { targets: [ { address: "127.0.0.1:$up" } ] }
consumers:
  - { name: app, credentials: [ { type: key, key: "soak-key-000000000000000000" } ] }
ai:
  providers:
    fake: { kind: openai_compatible, base_url: "http://127.0.0.1:$up/v1" }
  models:
    - { name: m, targets: [fake/m] }
topics:
  soak: {}
subscriptions:
  - { name: sink, topic: soak, endpoint: "http://127.0.0.1:$up/hook" }
routes:
  - { name: api, match: { paths: ["/api/*"] }, upstream: api, policies: [ { key_auth: {} } ] }
  # The bad keys' own route, so the legitimate routes' latency histograms hold only theirs.
  - { name: bad, match: { paths: ["/bad/*"] }, upstream: api, policies: [ { key_auth: {} } ] }
  - { name: llm, match: { paths: ["/v1/*"] }, ai: {}, policies: [ { key_auth: {} } ] }
  - { name: events, match: { paths: ["/events/soak"] }, topic: soak, policies: [ { key_auth: {} } ] }
YAML
pin 1 "$bin" serve --config "$dir/weir.yaml" --log warn > "$dir/weir.log" 2>&1 & weir=$!
cleanup() { kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 - "$px" <<'PY2' || { echo "abuse-soak: Weir did not start; its log:" >&2; tail -20 "$dir/weir.log" >&2; exit 1; }
import socket, sys, time
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY2
case "$mode" in
  --ci) rates=(--seconds 45 --baseline 10 --proxy-rate 200 --event-rate 50 --ai-rate 10
               --bad-key-rate 500 --idle-connections 300 --slowloris 30 --hostile-rate 5) ;;
  *[!0-9]*|"") echo "usage: abuse-soak.sh [SECONDS | --ci]" >&2; exit 2 ;;
  *) rates=(--seconds "$mode" --baseline 60 --enforce-latency) ;;
esac
if [ "$mode" != --ci ]; then
  # Legitimate proxy traffic at half the measured peak, sent open-loop by weir-load.
  load=${WEIR_LOAD_BIN:-$(dirname "$bin")/weir-load}
  [ -x "$load" ] || { echo "abuse-soak: build weir-load first: cargo build --release -p weir-testkit" >&2; exit 2; }
  command -v wrk >/dev/null || { echo "abuse-soak: needs wrk to measure the peak (apt-get install wrk)" >&2; exit 2; }
  rates+=(--load-bin "$load")
fi
ulimit -n 65536 2>/dev/null || true
status=0
taskset -c 0 python3 "$here/abuse-soak.py" --proxy "127.0.0.1:$px" --admin "127.0.0.1:$ad" --pid "$weir" \
  --sink-log "$dir/delivered.log" "${rates[@]}" ${ABUSE_SOAK_ARGS:-} || status=$?
if ! kill -0 "$weir" 2>/dev/null; then
  echo "abuse-soak: Weir is gone; its log:" >&2; tail -20 "$dir/weir.log" >&2; status=1
fi
exit $status
