#!/usr/bin/env bash
# Does memory go back after a spike? A release Weir with one AI route in front of a fake
# OpenAI-compatible provider (nginx answering a fixed completion) takes ROUNDS rounds of
# CONCURRENT chat requests with a MB-megabyte prompt each; prints RSS idle, the peak
# (VmHWM), and RSS each second for the 30 s after the last answer, then whether RSS came
# back within 20% of its level before the spike. The route's body limit is set above the
# prompt (AI routes default to 32 MiB). Loopback only.
#   scripts/memory-spike.sh [MB=30] [CONCURRENT=4] [ROUNDS=3]
# Needs nginx, curl, python3.
set -euo pipefail
mb=${1:-30}; conc=${2:-4}; rounds=${3:-3}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "memory-spike: build first: cargo build --release -p weir" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-spike.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
up=$(port); px=$(port)
mkdir -p "$dir/t"
cat > "$dir/up.conf" <<CONF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err warn;
events { worker_connections 1024; }
http { access_log off; client_max_body_size 200m; client_body_temp_path $dir/t/b;
  proxy_temp_path $dir/t/p; fastcgi_temp_path $dir/t/f; uwsgi_temp_path $dir/t/u; scgi_temp_path $dir/t/s;
  server { listen 127.0.0.1:$up; default_type application/json;
    location / { return 200 '{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}'; } } }
CONF
"$nginx" -p "$dir" -c "$dir/up.conf" & ngx=$!
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: "127.0.0.1:$px" }
access_log: off
data_dir: $dir/data
consumers:
  - { name: app, credentials: [ { type: key, key: "spike-key-0000000000000" } ] }
ai:
  providers:
    fake: { kind: openai_compatible, base_url: "http://127.0.0.1:$up/v1" }
  models:
    - { name: m, targets: [fake/m] }
routes:
  - { name: llm, match: { paths: ["/v1/*"] }, ai: {}, max_body_size: $((mb + 8))MiB, policies: [ { key_auth: {} } ] }
YAML
"$bin" serve --config "$dir/weir.yaml" --log warn > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$px/v1/models" -H "x-api-key: spike-key-0000000000000" && break; sleep 0.1; done
python3 - "$dir/body.json" "$mb" <<'PY'
import json, sys
text = "lorem ipsum " * (int(sys.argv[2]) * 1024 * 1024 // 12)
json.dump({"model": "m", "messages": [{"role": "user", "content": text}]}, open(sys.argv[1], "w"))
PY
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$weir/status"; }
sleep 1
idle=$(kib VmRSS)
for r in $(seq "$rounds"); do
  for _ in $(seq "$conc"); do
    curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$px/v1/chat/completions" \
      -H "x-api-key: spike-key-0000000000000" -H 'content-type: application/json' \
      --data-binary "@$dir/body.json" >> "$dir/codes" &
  done
  wait $(jobs -p | grep -v -e "^$weir\$" -e "^$ngx\$") 2>/dev/null || true
done
peak=$(kib VmHWM)
echo "answers: $(sort "$dir/codes" | uniq -c | tr '\n' ' ')"
echo "RSS idle $((idle / 1024)) MiB; peak (VmHWM) $((peak / 1024)) MiB for $conc x $mb MB at once"
printf 'RSS after the spike (MiB), each second:'
back=""
for s in $(seq 30); do
  sleep 1
  now=$(kib VmRSS)
  printf ' %s' $((now / 1024))
  if [ -z "$back" ] && [ "$now" -le $((idle * 12 / 10)) ]; then back=$s; fi
done
echo
if [ -n "$back" ]; then
  echo "back within 20% of idle after ${back} s"
else
  echo "NOT back within 20% of idle after 30 s"
fi
