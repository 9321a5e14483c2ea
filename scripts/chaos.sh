#!/usr/bin/env bash
# The event gateway's full chaos matrix: every fault the CI suite injects once, ROUNDS times
# over (default 5), on every backend — Weir killed with SIGKILL mid-ingest and
# mid-delivery (embedded, Redis, NATS, RabbitMQ); the broker killed with SIGKILL and
# restarted (a Redis, a nats-server and a RabbitMQ node of the test's own; the shared
# RabbitMQ also made silent behind a relay); endpoints that
# hang, answer slowly or reset connections beside a healthy one. Loopback only; each run
# is bounded by its tests' own deadlines. Prints, per backend and fault, the counts each
# round reported (acknowledged, delivered, duplicates, recovery times, p99s) and a summary.
#   scripts/chaos.sh [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weir-target}"
scripts/services.sh >/dev/null
log=$(mktemp "${TMPDIR:-/tmp}/weir-chaos.XXXXXX")
trap 'rm -f "$log"' EXIT
echo "chaos: building the tests"
cargo test -p weir --no-run --test events_chaos --test events_chaos_rabbit \
    --test events_chaos_endpoints >/dev/null 2>&1
failed=0
for r in $(seq "$rounds"); do
    for t in events_chaos events_chaos_rabbit events_chaos_endpoints; do
        printf 'chaos: round %s/%s: %s ... ' "$r" "$rounds" "$t"
        # One test binary at a time, one test at a time: they share brokers and compare
        # latencies.
        if cargo test -q -p weir --test "$t" -- --nocapture --test-threads 1 \
            >"$log.out" 2>&1; then
            echo ok
        else
            echo FAILED
            failed=$((failed + 1))
            grep -E 'panicked|timed out' "$log.out" | head -5 || true
        fi
        grep '^chaos: ' "$log.out" | sed "s/^chaos: /  round $r: /" | tee -a "$log" || true
    done
done
rm -f "$log.out"
echo
echo "chaos: summary over $rounds round(s)"
python3 - "$log" <<'PY'
import re, sys, collections
acc = collections.defaultdict(lambda: [0, 0, 0, 0])
for line in open(sys.argv[1]):
    m = re.search(r"round \d+: (\S+): (.*?): acknowledged (\d+), delivered (\d+), duplicates (\d+)", line)
    if m:
        # Brokers of a test's own listen on ports of their own: group by kind.
        k = (re.sub(r"://.*", "", m.group(1)), m.group(2))
        a = acc[k]
        a[0] += 1; a[1] += int(m.group(3)); a[2] += int(m.group(4)); a[3] += int(m.group(5))
for (backend, fault), (n, a, d, dup) in sorted(acc.items()):
    lost = a - d
    print(f"  {backend:9} {fault:12} runs {n}: acknowledged {a}, delivered {d}, lost {lost}, duplicates {dup}")
PY
if [ "$failed" -gt 0 ]; then
    echo "chaos: $failed run(s) failed" >&2
    exit 1
fi
echo "chaos: every run passed"
