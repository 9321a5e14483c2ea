#!/usr/bin/env bash
# Resident memory of Weir idle and while 1,000 keep-alive connections send requests.
#   scripts/measure-memory.sh [CONNECTIONS]
# Starts an nginx upstream and a release Weir on free loopback ports, reads VmRSS from
# /proc, and stops both. Needs nginx and wrk (Debian: apt-get install -y nginx wrk).
set -euo pipefail
conns=${1:-1000}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "measure-memory: build first: cargo build --release -p weir" >&2; exit 2; }
command -v wrk >/dev/null || { echo "measure-memory: wrk not found (apt-get install -y wrk)" >&2; exit 2; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-mem.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); px=$(free_port)
mkdir -p "$dir/t"
cat > "$dir/up.conf" <<CONF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $dir/t/b; proxy_temp_path $dir/t/p;
  fastcgi_temp_path $dir/t/f; uwsgi_temp_path $dir/t/u; scgi_temp_path $dir/t/s;
  server { listen 127.0.0.1:$up; location / { return 200 "ok"; } } }
CONF
"$nginx" -p "$dir" -c "$dir/up.conf" & pids+=($!)
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: "127.0.0.1:$px" }
access_log: off
upstreams: { backend: { targets: [ { address: "127.0.0.1:$up" } ] } }
routes: [ { name: all, upstream: backend } ]
YAML
ulimit -n 65536 2>/dev/null || true
"$bin" serve --config "$dir/weir.yaml" --log warn & wpid=$!; pids+=($wpid)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$px/" && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' "/proc/$wpid/status"; }
curl -s -o /dev/null "http://127.0.0.1:$px/"
sleep 1
idle=$(rss)
wrk -t2 -c"$conns" -d8s "http://127.0.0.1:$px/" > "$dir/wrk.txt" 2>&1 & wrkpid=$!
peak=0
for _ in $(seq 14); do sleep 0.5; r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; done
wait $wrkpid || true
sleep 1
after=$(rss)
printf 'workers=%s idle_rss_kib=%s peak_rss_kib_with_%s_connections=%s after_kib=%s\n' \
  "$(nproc)" "$idle" "$conns" "$peak" "$after"
grep -E "Requests/sec|Socket errors" "$dir/wrk.txt" || true
