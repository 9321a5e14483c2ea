#!/usr/bin/env bash
# The AI gateway's added latency: a fake OpenAI-compatible provider (nginx answering a
# fixed chat completion with usage) called directly and through Weir (release, one worker)
# with key auth, ai_limits (tokens per minute and a budget, in memory) and usage records
# on, at a fixed RATE (open loop), rounds alternating; prints p50/p90/p99/p99.9 of each and
# the differences, and Weir's RSS before and after.
#   scripts/bench-ai.sh [RATE=1000] [SECONDS=10] [ROUNDS=3]
# With SOAK_MINUTES=N, then N more minutes through Weir alone at RATE, Weir's RSS printed
# each minute (memory should stay flat).
# With AI_STREAM=1 the calls are streams (the fake provider answers OpenAI's SSE framing:
# chunks, a usage chunk, [DONE]) and the times are to the first piece of the answer (TTFT).
# With AI_STORE=1 Weir runs in database mode (SQLite) with analytics on: every call record
# is also written to the store, in batches once a second.
# Needs nginx, curl, python3; CPU 0 runs the load generator, CPU 1 the servers.
set -euo pipefail
rate=${1:-1000}; secs=${2:-10}; rounds=${3:-3}
target=${CARGO_TARGET_DIR:-/var/tmp/weir-target}
bin=${WEIR_BIN:-$target/release/weir}
load=$target/release/examples/ai_load
[ -x "$bin" ] || { echo "bench-ai: $bin not found; cargo build --release -p weir" >&2; exit 2; }
[ -x "$load" ] || { echo "bench-ai: $load not found; cargo build --release -p weir --example ai_load" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-ai-bench.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
up=$(port); proxy=$(port); admin=$(port)
# Whole answers under /v1, streams under /sse: the provider's base_url picks one.
base=/v1; [ "${AI_STREAM:-}" = 1 ] && base=/sse
export AI_STREAM
nginx=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$dir/tmp"
cat > "$dir/llm.conf" <<CONF
worker_processes 1; daemon off; pid $dir/llm.pid; error_log $dir/llm.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/b; proxy_temp_path $dir/tmp/p; fastcgi_temp_path $dir/tmp/f;
  uwsgi_temp_path $dir/tmp/u; scgi_temp_path $dir/tmp/s;
  server { listen 127.0.0.1:$up; default_type application/json;
    location / { return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}'; }
    location /sse/ { default_type text/event-stream;
      return 200 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}\n\ndata: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{"content":" there, how are you?"},"finish_reason":null}]}\n\ndata: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}\n\ndata: [DONE]\n\n'; } } }
CONF
taskset -c 1 "$nginx" -p "$dir" -e "$dir/llm.err" -c "$dir/llm.conf" & ngx=$!
store_lines=""
[ "${AI_STORE:-}" = 1 ] && store_lines="store: sqlite://weir.db
data_dir: $dir/data"
listen="{ proxy: 127.0.0.1:$proxy }"
[ "${AI_STORE:-}" = 1 ] && listen="{ proxy: 127.0.0.1:$proxy, admin: 127.0.0.1:$admin }"
cat > "$dir/weir.yaml" <<YAML
$store_lines
listen: $listen
workers: 1
access_log: off
consumers:
  - { name: bench, credentials: [ { type: key, key: "bench-key-000000000000" } ] }
ai:
  providers:
    fake: { kind: openai_compatible, base_url: "http://127.0.0.1:$up$base" }
  models:
    - { name: bench, targets: [fake/bench] }
  prices:
    fake/bench: { input: 1.0, output: 2.0 }
routes:
  - name: llm
    match: { paths: ["/v1/*"] }
    ai: {}
    policies: [ { key_auth: {} }, { ai_limits: { tokens_per_minute: 1000000000, budget_usd_per_month: 1000000 } } ]
YAML
WEIR_LOG=warn taskset -c 1 "$bin" serve --config "$dir/weir.yaml" > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$proxy/v1/models" -H "x-api-key: bench-key-000000000000" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$weir/status"; }
before=$(rss)
taskset -c 0 "$load" "$rate" "$secs" "$rounds" \
  "direct=http://127.0.0.1:$up$base/chat/completions" \
  "weir=http://127.0.0.1:$proxy/v1/chat/completions|bench-key-000000000000" | tee "$dir/out.tsv"
after=$(rss)
if [ "${AI_STORE:-}" = 1 ]; then
  sleep 2
  echo "AI call records in the store: $(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from weir_ai_calls').fetchone()[0])" "$dir/data/weir.db")"
fi
python3 - "$dir/out.tsv" "$before" "$after" <<'PY'
import sys
rows = {l.split("\t")[0]: l.split("\t") for l in open(sys.argv[1]) if not l.startswith("target")}
d, w = rows["direct"], rows["weir"]
for i, name in [(3, "p50"), (4, "p90"), (5, "p99"), (6, "p99.9")]:
    print(f"added {name}: {float(w[i]) - float(d[i]):.3f} ms")
print(f"weir RSS: {int(sys.argv[2]) / 1024:.1f} MiB before, {int(sys.argv[3]) / 1024:.1f} MiB after")
PY

if [ -n "${SOAK_MINUTES:-}" ]; then
  echo "soak: $SOAK_MINUTES min at $rate/s through Weir; RSS each minute (MiB):"
  taskset -c 0 "$load" "$rate" $((SOAK_MINUTES * 60)) 1 \
    "weir=http://127.0.0.1:$proxy/v1/chat/completions|bench-key-000000000000" > "$dir/soak.tsv" 2>/dev/null & soak=$!
  for m in $(seq "$SOAK_MINUTES"); do
    sleep 60
    echo "  minute $m: $(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$weir/status")"
  done
  wait $soak
  tail -1 "$dir/soak.tsv" | awk -F'\t' '{print "soak: " $2 " requests, " $3 " errors, p50 " $4 " ms, p99 " $6 " ms"}'
fi
