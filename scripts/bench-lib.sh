# Shared by the bench-*.sh scripts (sourced, not run): a free loopback port, an nginx on
# CPU 1 that answers 200 "ok" to every request (optionally logging each request's time),
# and the Weir configuration of the event benchmarks.

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_nginx_ok DIR PORT [LOG]: starts it in the background; its pid is in $ngx.
start_nginx_ok() {
  local dir=$1 port=$2 log=${3:-}
  local nginx; nginx=$(command -v nginx || echo /usr/sbin/nginx)
  local access="access_log off;"
  [ -n "$log" ] && access="log_format t '\$msec'; access_log $log t;"
  mkdir -p "$dir/tmp"
  cat > "$dir/ok-$port.conf" <<CONF
worker_processes 1; daemon off; pid $dir/ok-$port.pid; error_log $dir/ok-$port.err warn;
events { worker_connections 4096; }
http { $access keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/b; proxy_temp_path $dir/tmp/p; fastcgi_temp_path $dir/tmp/f;
  uwsgi_temp_path $dir/tmp/u; scgi_temp_path $dir/tmp/s;
  server { listen 127.0.0.1:$port; location / { return 200 "ok"; } } }
CONF
  taskset -c 1 "$nginx" -p "$dir" -e "$dir/ok-$port.err" -c "$dir/ok-$port.conf" &
  ngx=$!
}

# delivery_config DIR PROXY_PORT HOOK_PORT MAX_IN_FLIGHT: writes DIR/weir.yaml, one topic
# route (/events/bench) and one subscription delivering to 127.0.0.1:HOOK_PORT/hook; the
# queue is WEIR_QUEUE (a redis://, nats:// or amqp:// URL) or the embedded one, under a
# namespace of the run's own (its topic keeps events ten minutes, so brokers shed them).
delivery_config() {
  cat > "$1/weir.yaml" <<YAML
listen: { proxy: 127.0.0.1:$2 }
workers: 1
access_log: off
data_dir: $1/data
events: { backend: "${WEIR_QUEUE:-embedded}", namespace: "bench$$" }
topics:
  bench: { retention: 10m }
routes:
  - { name: ingest, topic: bench, match: { paths: ["/events/bench"] } }
subscriptions:
  - { name: hook, topic: bench, endpoint: "http://127.0.0.1:$3/hook", max_in_flight: $4 }
YAML
}
