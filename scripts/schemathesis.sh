#!/usr/bin/env bash
# Runs schemathesis (PyPI) against the admin API's own OpenAPI document: starts a node in
# database mode on a fresh SQLite store, logs in, and fails on any 5xx, any answer that
# breaks the documented schema, or a wrong content type.
#   scripts/schemathesis.sh [MAX_EXAMPLES]      (default 100 per operation)
# Needs: `pip install schemathesis` and a debug or release build of weir.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WEIR_BIN:-${CARGO_TARGET_DIR:-/var/tmp/weir-target}/debug/weir}
[ -x "$bin" ] || { echo "schemathesis.sh: $bin not found; run cargo build -p weir" >&2; exit 2; }
command -v st >/dev/null || { echo "schemathesis.sh: st not found; pip install schemathesis" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-st.XXXXXX")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy=$(port); admin=$(port)
cat > "$dir/node.yaml" <<YAML
listen: { proxy: 127.0.0.1:$proxy, admin: 127.0.0.1:$admin }
workers: 1
access_log: off
store: sqlite://weir.db
data_dir: $dir
upstreams:
  app: { targets: [ { address: "127.0.0.1:9" } ] }
routes:
  - { name: app, upstream: app, match: { paths: ["/app/*"] } }
YAML
password=schemathesis-password-1
WEIR_ADMIN_PASSWORD=$password WEIR_LOG=warn "$bin" serve --config "$dir/node.yaml" > "$dir/weir.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/api/v1/openapi.json" >/dev/null && break; sleep 0.1; done
token=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" \
  "http://127.0.0.1:$admin/api/v1/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
cd "$dir"
# Logout would end the run's own session; everything else is exercised.
st run "http://127.0.0.1:$admin/api/v1/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --exclude-path /api/v1/logout \
  -n "${1:-100}"
