#!/usr/bin/env bash
# Makes sure the servers the test suite talks to are up on this machine, starting any that
# is down (Redis, PostgreSQL, NATS with JetStream, RabbitMQ). Idempotent; prints what it did.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! command -v redis-server >/dev/null; then
    echo "services: redis-server is not installed; install it (Debian: apt-get install redis-server)" >&2
    exit 1
fi
if redis_up; then
    echo "services: redis on 127.0.0.1:6379 is up"
else
    echo "services: starting redis on 127.0.0.1:6379"
    logdir=/var/log/redis
    [ -w "$logdir" ] || logdir=/tmp
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /tmp --logfile "$logdir/ci.log"
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
    redis_up || { echo "services: redis did not come up; see $logdir/ci.log" >&2; exit 1; }
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! command -v pg_ctlcluster >/dev/null; then
    echo "services: PostgreSQL is not installed; install it (Debian: apt-get install postgresql)" >&2
    exit 1
fi
if pg_up; then
    echo "services: postgres on 127.0.0.1:5432 is up"
else
    echo "services: starting postgres on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 100); do pg_up && break; sleep 0.1; done
    pg_up || { echo "services: postgres did not come up; see /var/log/postgresql/" >&2; exit 1; }
fi

nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    echo "services: nats-server is not installed; install it (Debian: apt-get install nats-server)" >&2
    exit 1
fi
if nats_up; then
    echo "services: nats on 127.0.0.1:4222 is up"
else
    echo "services: starting nats (JetStream) on 127.0.0.1:4222"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    for _ in $(seq 100); do nats_up && break; sleep 0.1; done
    nats_up || { echo "services: nats did not come up; see /var/log/nats-server.log" >&2; exit 1; }
fi

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && rabbitmqctl -q status >/dev/null 2>&1; }
if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "services: rabbitmq-server is not installed; install it (Debian: apt-get install rabbitmq-server)" >&2
    exit 1
fi
if rabbit_up; then
    echo "services: rabbitmq on 127.0.0.1:5672 is up"
else
    echo "services: starting rabbitmq on 127.0.0.1:5672 (takes a few seconds)"
    rabbitmq-server -detached
    for _ in $(seq 300); do rabbit_up && break; sleep 0.2; done
    rabbit_up || { echo "services: rabbitmq did not come up; see /var/log/rabbitmq/" >&2; exit 1; }
fi
