#!/usr/bin/env bash
# Brings up the services Tradewire needs on loopback, installing them from Debian's
# packages when they are missing: NATS with JetStream (4222), PostgreSQL (5432) and
# ClickHouse (HTTP 8123). Then creates the `tradewire` PostgreSQL database.
# Safe to run again: services already up are left alone. Used by `.ci/run` and by
# `deno task services` on a new machine.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
fail() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# Waits up to $2 seconds for the command $1 to succeed.
wait_for() {
  local check=$1 seconds=$2 name=$3
  for _ in $(seq 1 "$((seconds * 4))"); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  fail "$name did not come up within ${seconds}s"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    fail "need root to run: $*"
  fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- NATS with JetStream ---------------------------------------------------------------
if port_open 4222; then
  log "NATS is up on 127.0.0.1:4222"
else
  command -v nats-server >/dev/null || apt_install nats-server
  as_root mkdir -p /var/lib/nats-server
  log "starting nats-server with JetStream"
  as_root start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for "port_open 4222" 30 NATS
  log "NATS is up on 127.0.0.1:4222"
fi

# --- PostgreSQL ------------------------------------------------------------------------
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  log "PostgreSQL is up on 127.0.0.1:5432"
else
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || fail "no PostgreSQL cluster found in /etc/postgresql"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "pg_isready -q -h 127.0.0.1 -p 5432" 60 PostgreSQL
  log "PostgreSQL is up on 127.0.0.1:5432"
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1; then
  fail "cannot connect to PostgreSQL as postgres on 127.0.0.1 (tests expect trust auth on loopback)"
fi
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'tradewire'")" != "1" ]; then
  log "creating database tradewire"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE tradewire" >/dev/null
fi

# --- ClickHouse ------------------------------------------------------------------------
command -v curl >/dev/null || apt_install curl
clickhouse_up() { curl -fsS --max-time 2 http://127.0.0.1:8123/ping >/dev/null 2>&1; }
if clickhouse_up; then
  log "ClickHouse is up on 127.0.0.1:8123"
else
  command -v clickhouse-server >/dev/null || apt_install clickhouse-server clickhouse-client
  log "starting clickhouse-server"
  as_root mkdir -p /var/log/clickhouse-server /var/lib/clickhouse /run/clickhouse-server
  as_root chown -R clickhouse:clickhouse /var/log/clickhouse-server /var/lib/clickhouse \
    /run/clickhouse-server
  as_root su -s /bin/sh clickhouse -c \
    "clickhouse-server --config-file=/etc/clickhouse-server/config.xml --daemon \
      --pid-file=/run/clickhouse-server/clickhouse-server.pid"
  wait_for clickhouse_up 90 ClickHouse
  log "ClickHouse $(curl -fsS 'http://127.0.0.1:8123/?query=SELECT%20version()') is up on 127.0.0.1:8123"
fi
