#!/usr/bin/env bash
# 202-to-delivery latency at a moderate load: RATE events/s POSTed to a topic route for
# SECONDS, delivered by one subscription to a local endpoint that notes when each
# arrives. Prints percentiles of the time from the 202 (and from the POST) to the
# delivery's arrival.
#   scripts/bench-event-latency.sh [RATE=500] [SECONDS=10]
# Needs python3; CPU 0 runs the load and the endpoint, CPU 1 Weir.
set -euo pipefail
rate=${1:-500}; secs=${2:-10}
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/release/weir}
[ -x "$bin" ] || { echo "bench-event-latency: $bin not found; cargo build --release -p weir" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-latency.XXXXXX")
. "$(dirname "$0")/bench-lib.sh"
hook=$(port); proxy=$(port)
delivery_config "$dir" "$proxy" "$hook" 64
WEIR_LOG=warn taskset -c 1 "$bin" serve --config "$dir/weir.yaml" > "$dir/weir.log" 2>&1 & weir=$!
trap 'kill $weir 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
taskset -c 0 python3 - "$proxy" "$hook" "$rate" "$secs" <<'PY'
import http.client, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

proxy, hook, rate, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
arrived, lock = {}, threading.Lock()

class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        t = time.monotonic()
        with lock:
            arrived.setdefault(json.loads(body)["n"], t)
        self.send_response(204); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass

server = ThreadingHTTPServer(("127.0.0.1", hook), Hook)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()

for _ in range(100):
    try:
        c = http.client.HTTPConnection("127.0.0.1", proxy, timeout=2)
        c.request("POST", "/events/bench", body=json.dumps({"n": -1}), headers={"content-type": "application/json"})
        if c.getresponse().status == 202: break
    except OSError: time.sleep(0.1)
time.sleep(0.5)

sent, accepted = {}, {}
senders = 4
def send(k):
    c = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    gap = senders / rate
    t0 = time.monotonic(); i = 0
    while time.monotonic() - t0 < secs:
        n = i * senders + k; i += 1
        s = time.monotonic()
        c.request("POST", "/events/bench", body=json.dumps({"n": n, "type": "order.created"}), headers={"content-type": "application/json"})
        r = c.getresponse(); r.read()
        a = time.monotonic()
        if r.status == 202:
            with lock: sent[n], accepted[n] = s, a
        nxt = t0 + i * gap
        if nxt > time.monotonic(): time.sleep(nxt - time.monotonic())
threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
for t in threads: t.start()
for t in threads: t.join()
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    with lock:
        if all(n in arrived for n in accepted): break
    time.sleep(0.1)
with lock:
    ok = [n for n in accepted if n in arrived]
    from_202 = sorted((arrived[n] - accepted[n]) * 1000 for n in ok)
    from_post = sorted((arrived[n] - sent[n]) * 1000 for n in ok)
def pct(v, p): return v[min(len(v) - 1, int(p / 100 * len(v)))]
print(f"{len(accepted)} events accepted at {len(accepted) / secs:.0f}/s, {len(ok)} delivered")
for name, v in (("202 -> delivery", from_202), ("POST -> delivery", from_post)):
    print(f"{name:17} p50 {pct(v, 50):6.2f} ms   p90 {pct(v, 90):6.2f} ms   p99 {pct(v, 99):6.2f} ms   max {v[-1]:7.2f} ms")
PY
