#!/usr/bin/env bash
# dev-db.sh — find or start the PostgreSQL that `make test`, `make bench` and
# `make run` use, and print its URL on stdout (everything else goes to stderr).
#
# Usage:
#   scripts/dev-db.sh url [test|run]   print the database URL (default: test)
#   scripts/dev-db.sh status           say which database would be used
#   scripts/dev-db.sh stop             stop the throwaway cluster, if running
#   scripts/dev-db.sh destroy          stop it and delete its folder
#
# How the URL is chosen, first match wins:
#   1. test: ESOX_TEST_DATABASE_URL; run: DATABASE_URL (then ESOX_TEST_DATABASE_URL).
#   2. A server answering on $ESOX_PG_HOST:$ESOX_PG_PORT (default 127.0.0.1:5432):
#      postgres://postgres@HOST:PORT/test?sslmode=disable, creating database
#      `test` if it is missing.
#   3. A throwaway cluster in $ESOX_PG_DIR (default <repo>/.esox): initdb +
#      pg_ctl with trust auth on 127.0.0.1, port $ESOX_LOCAL_PG_PORT (default
#      54329, or the next free one), run as the `postgres` user when the caller
#      is root. A cluster already running there is reused.
#
# ESOX_FORCE_LOCAL_PG=1 skips step 2 (and step 1), to use or test the throwaway
# cluster on a machine that has a server on 5432.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_HOST="${ESOX_PG_HOST:-127.0.0.1}"
PG_PORT="${ESOX_PG_PORT:-5432}"
PG_DB="${ESOX_PG_DATABASE:-test}"
LOCAL_DIR="${ESOX_PG_DIR:-$ROOT/.esox}"
LOCAL_PORT="${ESOX_LOCAL_PG_PORT:-54329}"

log() { printf 'dev-db: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pgbin NAME prints the path of a PostgreSQL program: from PATH, else the
# newest /usr/lib/postgresql/*/bin (Debian/Ubuntu) or /usr/pgsql-*/bin (RHEL).
pgbin() {
	local name=$1 p
	if p=$(command -v "$name" 2>/dev/null); then
		printf '%s\n' "$p"
		return 0
	fi
	for p in $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /usr/local/pgsql/bin 2>/dev/null | sort -rV); do
		if [[ -x $p/$name ]]; then
			printf '%s\n' "$p/$name"
			return 0
		fi
	done
	return 1
}

# tcp_open HOST PORT: true when something accepts a TCP connection.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# answers HOST PORT: true when a PostgreSQL server accepts connections there.
answers() {
	local isready
	if isready=$(pgbin pg_isready); then
		"$isready" -q -h "$1" -p "$2" -t 3
	else
		tcp_open "$1" "$2"
	fi
}

# ensure_db HOST PORT: create database $PG_DB when missing (needs psql).
ensure_db() {
	local host=$1 port=$2 psql exists
	if ! psql=$(pgbin psql); then
		log "psql not found; assuming database $PG_DB exists on $host:$port"
		return 0
	fi
	exists=$("$psql" -X -q -h "$host" -p "$port" -U postgres -d postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ||
		die "cannot connect to $host:$port as user postgres (trust auth expected)"
	if [[ $exists != 1 ]]; then
		log "creating database $PG_DB on $host:$port"
		# A concurrent run may create it first; only fail if it is still missing.
		"$psql" -X -q -h "$host" -p "$port" -U postgres -d postgres -c "CREATE DATABASE \"$PG_DB\"" >/dev/null 2>&1 ||
			[[ $("$psql" -X -q -h "$host" -p "$port" -U postgres -d postgres -tAc \
				"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") == 1 ]] ||
			die "cannot create database $PG_DB on $host:$port"
	fi
}

url_for() { printf 'postgres://postgres@%s:%s/%s?sslmode=disable\n' "$1" "$2" "$PG_DB"; }

# as_owner CMD...: run CMD as the cluster's owner — `postgres` when we are
# root (initdb and postgres refuse to run as root), ourselves otherwise.
as_owner() {
	if [[ $(id -u) -eq 0 ]]; then
		if command -v runuser >/dev/null 2>&1; then
			runuser -u postgres -- "$@"
		else
			su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
		fi
	else
		"$@"
	fi
}

# local_dir prints the folder of the throwaway cluster. As root the postgres
# user must be able to reach it; if the project lies somewhere it cannot
# (e.g. under /root), fall back to a folder under /tmp keyed by the project path.
local_dir() {
	if [[ $(id -u) -eq 0 ]]; then
		id postgres >/dev/null 2>&1 ||
			die "running as root but there is no 'postgres' user to own the throwaway cluster (install PostgreSQL, or set ESOX_TEST_DATABASE_URL)"
		mkdir -p "$LOCAL_DIR"
		chown postgres: "$LOCAL_DIR"
		if ! as_owner test -w "$LOCAL_DIR"; then
			local alt
			alt="${TMPDIR:-/tmp}/esox-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
			log "user postgres cannot reach $LOCAL_DIR; using $alt"
			mkdir -p "$alt"
			chown postgres: "$alt"
			chmod 700 "$alt"
			LOCAL_DIR=$alt
		fi
	else
		mkdir -p "$LOCAL_DIR"
	fi
	printf '%s\n' "$LOCAL_DIR"
}

# running_port DATA prints the port of the cluster running in DATA, or fails.
running_port() {
	local data=$1 pg_ctl
	[[ -f $data/postmaster.pid ]] || return 1
	pg_ctl=$(pgbin pg_ctl) || return 1
	as_owner "$pg_ctl" -D "$data" status >/dev/null 2>&1 || return 1
	sed -n 4p "$data/postmaster.pid"
}

start_local() {
	local initdb pg_ctl dir data sock port tries=0 opts
	initdb=$(pgbin initdb) || die "no PostgreSQL reachable on $PG_HOST:$PG_PORT and initdb not found; install PostgreSQL (apt-get install postgresql) or set ESOX_TEST_DATABASE_URL"
	pg_ctl=$(pgbin pg_ctl) || die "pg_ctl not found beside initdb"
	dir=$(local_dir)
	data=$dir/pgdata
	sock=$dir/run
	# Serialise concurrent starts (two `make` runs on a fresh machine).
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$dir/.lock"
		flock -w 120 9 || die "timed out waiting for $dir/.lock"
	fi

	if port=$(running_port "$data"); then
		log "reusing the throwaway cluster in $data on port $port"
		ensure_db 127.0.0.1 "$port"
		url_for 127.0.0.1 "$port"
		return 0
	fi

	if [[ ! -s $data/PG_VERSION ]]; then
		log "initialising a throwaway cluster in $data"
		rm -rf "$data"
		as_owner mkdir -p "$data"
		as_owner "$initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
	fi

	port=$LOCAL_PORT
	while answers 127.0.0.1 "$port" || tcp_open 127.0.0.1 "$port"; do
		tries=$((tries + 1))
		((tries < 50)) || die "no free port from $LOCAL_PORT to $port"
		port=$((port + 1))
	done

	# Unix socket paths are limited to ~107 bytes; without room, TCP only.
	# Default durability settings: benchmarks may run against this cluster too.
	opts="-c listen_addresses=127.0.0.1 -p $port"
	if ((${#sock} < 90)); then
		as_owner mkdir -p "$sock"
		opts+=" -c unix_socket_directories=$sock"
	else
		opts+=" -c unix_socket_directories="
	fi
	log "starting the throwaway cluster on 127.0.0.1:$port (log: $dir/postgres.log)"
	as_owner "$pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 -o "$opts" start </dev/null >&2 9>&- ||
		{ tail -n 20 "$dir/postgres.log" >&2 || true; die "pg_ctl start failed"; }
	ensure_db 127.0.0.1 "$port"
	url_for 127.0.0.1 "$port"
}

cmd_url() {
	local mode=${1:-test}
	case $mode in
	test | run) ;;
	*) die "unknown mode $mode (want test or run)" ;;
	esac
	if [[ ${ESOX_FORCE_LOCAL_PG:-} != 1 ]]; then
		if [[ $mode == run && -n ${DATABASE_URL:-} ]]; then
			printf '%s\n' "$DATABASE_URL"
			return 0
		fi
		if [[ -n ${ESOX_TEST_DATABASE_URL:-} ]]; then
			printf '%s\n' "$ESOX_TEST_DATABASE_URL"
			return 0
		fi
		if answers "$PG_HOST" "$PG_PORT"; then
			ensure_db "$PG_HOST" "$PG_PORT"
			url_for "$PG_HOST" "$PG_PORT"
			return 0
		fi
		log "nothing answers on $PG_HOST:$PG_PORT"
	fi
	start_local
}

# find_local_data prints the data folder of the throwaway cluster, if any.
find_local_data() {
	local alt
	alt="${TMPDIR:-/tmp}/esox-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
	for d in "$LOCAL_DIR" "$alt"; do
		if [[ -s $d/pgdata/PG_VERSION ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done
	return 1
}

cmd_stop() {
	local dir pg_ctl
	dir=$(find_local_data) || { log "no throwaway cluster"; return 0; }
	if running_port "$dir/pgdata" >/dev/null; then
		pg_ctl=$(pgbin pg_ctl)
		log "stopping the throwaway cluster in $dir/pgdata"
		as_owner "$pg_ctl" -D "$dir/pgdata" -m fast -w stop >&2
	else
		log "the throwaway cluster in $dir/pgdata is not running"
	fi
}

cmd_status() {
	local dir port
	if dir=$(find_local_data) && port=$(running_port "$dir/pgdata"); then
		log "throwaway cluster running in $dir/pgdata on 127.0.0.1:$port"
	else
		log "no throwaway cluster running"
	fi
	if answers "$PG_HOST" "$PG_PORT"; then
		log "a server answers on $PG_HOST:$PG_PORT"
	else
		log "nothing answers on $PG_HOST:$PG_PORT"
	fi
}

cmd_destroy() {
	local dir
	cmd_stop
	dir=$(find_local_data) || return 0
	log "deleting $dir/pgdata"
	rm -rf "$dir/pgdata" "$dir/run" "$dir/postgres.log" "$dir/initdb.log"
}

case ${1:-url} in
url) cmd_url "${2:-test}" ;;
stop) cmd_stop ;;
status) cmd_status ;;
destroy) cmd_destroy ;;
-h | --help | help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command $1 (try --help)" ;;
esac
