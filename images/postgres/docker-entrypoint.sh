#!/bin/bash
# Entry point of berth/postgres (built by images/build.sh): a small stand-in for
# the official postgres image's entry point, made for a hardened container.
#
# - Runs as whatever non-root uid:gid the container is started with
#   (`docker run --user UID:GID`); it never switches users (no gosu/su), so it
#   works with --cap-drop ALL and --security-opt no-new-privileges.
# - Writes only to $PGDATA (default /var/lib/postgresql/data), /run/postgresql
#   and $TMPDIR (default /tmp), so the root filesystem can be --read-only.
# - On an empty $PGDATA: initdb (UTF8, C collation, scram-sha-256 for every
#   login), a database named $POSTGRES_DB, then the server in the foreground,
#   listening on all interfaces, password (SCRAM) logins from the container's
#   own networks ("samenet").
#
# Environment (each may also be given as NAME_FILE, the path of a file holding it):
#   POSTGRES_PASSWORD  required on first start
#   POSTGRES_USER      superuser name, default "postgres"
#   POSTGRES_DB        database created on first start, default $POSTGRES_USER
#   POSTGRES_INITDB_ARGS  extra initdb arguments (word-split)
#   PGDATA             data directory, default /var/lib/postgresql/data
set -Eeuo pipefail

log() { printf '%s [berth-postgres] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env NAME [DEFAULT]: NAME from NAME or from the file named by NAME_FILE.
file_env() {
  local var=$1 fvar="${1}_FILE" def=${2:-} val
  if [[ -n ${!var:-} && -n ${!fvar:-} ]]; then
    die "both $var and $fvar are set (they are exclusive)"
  fi
  val=$def
  if [[ -n ${!var:-} ]]; then
    val=${!var}
  elif [[ -n ${!fvar:-} ]]; then
    [[ -r ${!fvar} ]] || die "$fvar=${!fvar} is not readable"
    val=$(< "${!fvar}")
  fi
  export "$var=$val"
  unset "$fvar"
}

# Options only ("-c foo=bar"): they are for postgres.
if [[ $# -eq 0 || ${1:0:1} == '-' ]]; then
  set -- postgres "$@"
fi

# Anything else (psql, pg_dump, bash ...) runs as is, and so does a postgres
# that only prints something (--version, --help, --describe-config, -C name).
if [[ $1 != postgres ]]; then
  exec "$@"
fi
for arg in "${@:2}"; do
  case $arg in
    -'?'|--help|--describe-config|-V|--version|-C) exec "$@" ;;
  esac
done

[[ $(id -u) != 0 ]] || die "refusing to run as root: start the container with --user UID:GID (the owner of the data directory)"

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  file_env POSTGRES_PASSWORD
  [[ -n $POSTGRES_PASSWORD ]] || die "the data directory $PGDATA is empty and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is not set"

  mkdir -p "$PGDATA" 2>/dev/null || die "cannot create $PGDATA (uid $(id -u) must own its parent, or mount it)"
  [[ -O $PGDATA ]] || die "$PGDATA is owned by uid $(stat -c %u "$PGDATA"), not by uid $(id -u) that this container runs as"
  chmod 0700 "$PGDATA"
  if [[ -n $(ls -A "$PGDATA") ]]; then
    die "$PGDATA has files but no PG_VERSION: not a PostgreSQL data directory, refusing to initialise over it"
  fi

  umask 077
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/berth-pg-init.XXXXXX") || die "cannot write to ${TMPDIR:-/tmp}: mount a tmpfs there"
  trap 'rm -rf "$scratch"' EXIT

  # initdb (and postgres --single, psql without -U) look the uid up in
  # passwd; an arbitrary --user uid has no entry, and /etc is read-only.
  # nss_wrapper (Debian's libnss-wrapper) answers from files we write in the
  # tmpfs instead, for the init steps only.
  if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
    printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" > "$scratch/passwd"
    printf 'postgres:x:%s:\n' "$(id -g)" > "$scratch/group"
    export LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD=$scratch/passwd NSS_WRAPPER_GROUP=$scratch/group
  fi

  printf '%s\n' "$POSTGRES_PASSWORD" > "$scratch/pwfile"
  log "initialising $PGDATA (superuser $POSTGRES_USER, UTF8, C collation, scram-sha-256)"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is word-split on purpose
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$scratch/pwfile" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C ${POSTGRES_INITDB_ARGS:-} >&2
  rm -f "$scratch/pwfile"

  cat >> "$PGDATA/postgresql.conf" <<'EOF'

# berth/postgres
listen_addresses = '*'
unix_socket_directories = '/run/postgresql'
password_encryption = 'scram-sha-256'
EOF
  cat >> "$PGDATA/pg_hba.conf" <<'EOF'

# berth/postgres: password (SCRAM) logins from the subnets of the container's
# own interfaces (its Docker networks), nothing from elsewhere.
host    all             all             samenet                 scram-sha-256
EOF

  if [[ $POSTGRES_DB != postgres ]]; then
    # A temporary server on a private socket only (no TCP), so that nothing
    # can connect before initialisation is done and healthchecks stay red.
    log "creating database $POSTGRES_DB"
    pg_ctl --pgdata="$PGDATA" --wait --timeout=60 --silent \
      -o "-c listen_addresses='' -c unix_socket_directories='$scratch'" start >&2
    PGPASSWORD=$POSTGRES_PASSWORD psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 \
      --host="$scratch" --username="$POSTGRES_USER" --dbname=postgres \
      --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
    pg_ctl --pgdata="$PGDATA" --wait --timeout=60 --silent -m fast stop >&2
  fi

  unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
  rm -rf "$scratch"
  trap - EXIT
  umask 022
  log "initialisation done"
fi
unset POSTGRES_PASSWORD

exec "$@"
