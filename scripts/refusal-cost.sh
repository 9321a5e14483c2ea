#!/usr/bin/env bash
# Refusal cost: what answering abuse costs Weir, and what it takes from good traffic.
# A release Weir (the configuration a user would write: defaults, one key-auth route to an
# nginx upstream, max_body_size 1KiB) and the nginx share CPU 1; the load runs on CPU 0.
#   1. CPU per refusal: weir-load (open loop) sends bad keys, unknown paths and too-large
#      bodies at RATE/s for SECONDS each; Weir's own CPU time (user + system, from
#      /proc/PID/stat) over the refusals answered is the cost of one, kernel included.
#      nginx answering 401 from its configuration, measured the same way, is the floor the
#      kernel and loopback set on this machine.
#   2. Fairness: wrk drives good (keyed) traffic through Weir for SECONDS, alone and with
#      bad keys at RATE/s beside it, in ROUNDS interleaved rounds; the loss is
#      1 - (median good req/s with the bad keys) / (median good req/s alone).
#   scripts/refusal-cost.sh [SECONDS=10] [RATE=20000] [ROUNDS=3]
# Needs nginx, wrk, python3 and a release build of weir and weir-load
# (cargo build --release -p weir -p weir-testkit). Loopback only.
set -euo pipefail
secs=${1:-10}; rate=${2:-20000}; rounds=${3:-3}
target=${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release
bin=${WEIR_BIN:-$target/weir}; load=${WEIR_LOAD_BIN:-$target/weir-load}
for b in "$bin" "$load"; do
  [ -x "$b" ] || { echo "refusal-cost: build first: cargo build --release -p weir -p weir-testkit" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "refusal-cost: needs wrk (apt-get install wrk)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
. "$here/bench-lib.sh"
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-refusal.XXXXXX")
up=$(port); px=$(port)
start_nginx_ok "$dir" "$up"
key=refusal-key-0000000000000000
cat > "$dir/weir.yaml" <<YAML
listen: { proxy: "127.0.0.1:$px" }
data_dir: $dir/data
upstreams:
  api: { targets: [ { address: "127.0.0.1:$up" } ] }
consumers:
  - { name: app, credentials: [ { type: key, key: "$key" } ] }
routes:
  - { name: api, match: { paths: ["/api/*"] }, upstream: api, max_body_size: 1KiB, policies: [ { key_auth: {} } ] }
YAML
taskset -c 1 "$bin" serve --config "$dir/weir.yaml" --log warn > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -fs -o /dev/null -H "x-api-key: $key" "http://127.0.0.1:$px/api/x" && break
  sleep 0.1
done
# Weir's CPU time so far, in clock ticks (utime + stime).
ticks() { awk '{print $14 + $15}' "/proc/$weir/stat"; }
hz=$(getconf CLK_TCK)

echo "refusal-cost: CPU per refusal at $rate/s for $secs s each (Weir on CPU 1, load on CPU 0)"
refuse() { # NAME ARGS...: one open-loop run; prints the cost per answered refusal
  local name=$1; shift
  local t0 out answered t1
  t0=$(ticks)
  out=$(taskset -c 0 "$load" --target "127.0.0.1:$px" --rate "$rate" --connections 64 --seconds "$secs" --json "$@")
  t1=$(ticks)
  answered=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["answered"])' "$out")
  python3 - "$name" "$out" "$t0" "$t1" "$hz" <<'PY'
import json, sys
name, out, t0, t1, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (t1 - t0) / hz
n = max(out["answered"], 1)
print(f"  {name:10s} {out['answered']} answered {out['statuses']}, {out['errors']} errors, "
      f"p99 {out['p99_ms']:.2f} ms; Weir CPU {cpu:.2f} s = {cpu / n * 1e6:.2f} us per refusal")
PY
  [ "$answered" -gt 0 ]
}
refuse "bad key" --path /api/x --header "x-api-key: wrong-key-000000000000000"
refuse "no route" --path /nowhere
refuse "too large" --method POST --path /api/x --header "x-api-key: $key" --body "$(head -c 2048 /dev/zero | tr '\0' x)"

# The machine's floor: nginx answering 401 from its config at once, measured the same way.
ref=$(port)
mkdir -p "$dir/ref"
cat > "$dir/ref/n.conf" <<CONF
worker_processes 1; daemon off; pid $dir/ref/pid; error_log $dir/ref/err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $dir/ref;
  server { listen 127.0.0.1:$ref; location / { return 401 '{"error":"unauthorized"}'; } } }
CONF
taskset -c 1 "$(command -v nginx || echo /usr/sbin/nginx)" -p "$dir/ref" -c "$dir/ref/n.conf" & refpid=$!
for _ in $(seq 50); do [ -s "$dir/ref/pid" ] && pgrep -P "$(cat "$dir/ref/pid")" >/dev/null && break; sleep 0.1; done
refw=$(pgrep -P "$(cat "$dir/ref/pid")" | head -1)
t0=$(awk '{print $14 + $15}' "/proc/$refw/stat")
out=$(taskset -c 0 "$load" --target "127.0.0.1:$ref" --rate "$rate" --connections 64 --seconds "$secs" --json --path /api/x)
t1=$(awk '{print $14 + $15}' "/proc/$refw/stat")
kill "$refpid" 2>/dev/null; wait "$refpid" 2>/dev/null || true
python3 - "$out" "$t0" "$t1" "$hz" <<'PY'
import json, sys
out, t0, t1, hz = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu = (t1 - t0) / hz
print(f"  {'nginx 401':10s} {out['answered']} answered {out['statuses']} (the machine's floor: a static answer, "
      f"no log); nginx CPU {cpu:.2f} s = {cpu / max(out['answered'], 1) * 1e6:.2f} us per answer")
PY

echo "refusal-cost: good traffic (wrk, 1 thread, 32 connections) alone and beside $rate bad keys/s, $rounds rounds of $secs s"
good() { # prints wrk's req/s
  taskset -c 0 wrk -t1 -c32 -d"${secs}s" -H "x-api-key: $key" "http://127.0.0.1:$px/api/x" \
    | awk '/Requests\/sec/ {print $2}'
}
alone=(); beside=()
for r in $(seq "$rounds"); do
  a=$(good)
  taskset -c 0 "$load" --target "127.0.0.1:$px" --rate "$rate" --connections 64 --seconds "$((secs + 2))" \
    --path /api/x --header "x-api-key: wrong-key-000000000000000" --json > "$dir/bad.json" &
  lp=$!
  sleep 1
  b=$(good)
  wait $lp
  bad=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f/s, statuses %s" % (d["achieved"], d["statuses"]))' "$dir/bad.json")
  echo "  round $r: alone $a req/s; beside bad keys $b req/s (bad keys answered $bad)"
  alone+=("$a"); beside+=("$b")
done
python3 - "${alone[*]}" "${beside[*]}" <<'PY'
import statistics, sys
a = statistics.median(float(x) for x in sys.argv[1].split())
b = statistics.median(float(x) for x in sys.argv[2].split())
print(f"refusal-cost: good traffic median {a:.0f} req/s alone, {b:.0f} req/s beside the bad keys: "
      f"{(1 - b / a) * 100:.1f}% lost (bound 10%)")
PY
