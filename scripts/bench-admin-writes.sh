#!/usr/bin/env bash
# Does applying configuration changes through the admin API dent proxy throughput?
# Starts an nginx upstream and Weir (release build, database mode on SQLite), then runs
# wrk against one route for ROUNDS pairs of runs, alternating: a quiet run, and a run
# during which CHANGES admin writes (each a full validate → compile → swap) are applied,
# spread evenly. Prints req/s of each run and the ratio of the medians.
#   scripts/bench-admin-writes.sh [SECONDS=10] [CHANGES=100] [ROUNDS=3]
# Needs nginx, wrk, curl, python3; CPU 0 runs wrk and the admin client (curl), CPU 1 the
# servers (as proxy-bench.sh), so the dip measured is the cost inside Weir.
set -euo pipefail
secs=${1:-10}; changes=${2:-100}; rounds=${3:-3}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-admin-writes: $bin not found; cargo build --release -p weir" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-adminbench.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
up=$(port); proxy=$(port); admin=$(port)
cat > "$dir/node.yaml" <<YAML
listen: { proxy: 127.0.0.1:$proxy, admin: 127.0.0.1:$admin }
workers: 1
access_log: off
store: sqlite://weir.db
data_dir: $dir
upstreams:
  backend: { targets: [ { address: "127.0.0.1:$up" } ] }
routes:
  - { name: hot, upstream: backend, match: { paths: ["/*"] } }
YAML
start_nginx_ok "$dir" "$up"
WEIR_ADMIN_PASSWORD=bench-password-123 WEIR_LOG=warn taskset -c 1 "$bin" serve --config "$dir/node.yaml" > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/api/v1/openapi.json" >/dev/null && break; sleep 0.1; done
token=$(curl -sf -H 'content-type: application/json' -d '{"username":"admin","password":"bench-password-123"}' \
  "http://127.0.0.1:$admin/api/v1/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
run_wrk() { taskset -c 0 wrk -t1 -c50 -d"${secs}s" "http://127.0.0.1:$proxy/x" | awk '/Requests\/sec/ {print $2}'; }
writes() {  # $1 = round, $2 = write|noop: CHANGES requests on one keep-alive connection,
            # spread over the run; noop asks /healthz instead (the client's own cost)
  taskset -c 0 python3 - "$admin" "$token" "$secs" "$changes" "$1" "$2" <<'PY'
import http.client, json, sys, time
admin, token, secs, changes, rnd, mode = sys.argv[1:7]
secs, changes = float(secs), int(changes)
c = http.client.HTTPConnection("127.0.0.1", int(admin))
gap = secs / changes
for i in range(changes):
    t = time.monotonic()
    if mode == "write":
        body = json.dumps({"upstream": "backend", "match": {"paths": [f"/r{rnd}-{i}"]}})
        c.request("PUT", f"/api/v1/routes/r{i % 10}", body,
                  {"authorization": f"Bearer {token}", "content-type": "application/json"})
    else:
        c.request("GET", "/healthz")
    r = c.getresponse(); r.read()
    if r.status != 200:
        print(f"request {i}: {r.status}", file=sys.stderr)
    time.sleep(max(0.0, gap - (time.monotonic() - t)))
PY
}
taskset -c 0 wrk -t1 -c50 -d2s "http://127.0.0.1:$proxy/x" > /dev/null   # warm-up
quiet=(); noop=(); busy=()
for r in $(seq "$rounds"); do
  q=$(run_wrk); quiet+=("$q")
  writes "$r" noop & w=$!
  n=$(run_wrk); wait $w; noop+=("$n")
  writes "$r" write & w=$!
  b=$(run_wrk); wait $w; busy+=("$b")
  echo "round $r: quiet $q, with $changes health checks $n, with $changes admin writes $b req/s"
done
python3 - "${quiet[@]}" -- "${noop[@]}" -- "${busy[@]}" <<'PY'
import statistics, sys
a = " ".join(sys.argv[1:]).split(" -- ")
q, n, b = ([float(x) for x in part.split()] for part in a)
mq, mn, mb = statistics.median(q), statistics.median(n), statistics.median(b)
print(f"median req/s: quiet {mq:.0f}, during health checks {mn:.0f}, during admin writes {mb:.0f}")
print(f"writes vs quiet {mb/mq:.3f}; writes vs the same client asking /healthz {mb/mn:.3f}")
PY
echo "version now served: $(curl -s -H "authorization: Bearer $token" "http://127.0.0.1:$admin/api/v1/status")"
