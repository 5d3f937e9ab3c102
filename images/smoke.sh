#!/usr/bin/env bash
# Proves that berth/postgres and berth/synapse work together under the
# hardening a Berth host uses in production:
#
#   - a random non-root uid:gid (20000+) owning 0700 data directories,
#   - --read-only root filesystems, --cap-drop ALL, no-new-privileges,
#     --pids-limit, memory and CPU limits, tmpfs for the few writable paths,
#   - PostgreSQL on an internal bridge network only; Synapse on that network
#     and on a second one, its client port published on 127.0.0.1 only.
#
# It writes a minimal homeserver.yaml (as the agent will), lets Synapse's own
# script make the signing key, waits for both healthchecks, asks /health and
# /_matrix/client/versions from the host, registers a user with the shared
# secret (register_new_matrix_user, inside the Synapse container), logs in as
# that user, reports `docker stats` of the idle pair, and tears it all down.
#
# Needs only bash and docker (curl is used when present). Run as root (or a
# user who may chown) after images/build.sh.
# Env: POSTGRES_IMAGE (berth/postgres:15), SYNAPSE_IMAGE (berth/synapse:latest),
#      BERTH_SMOKE_KEEP=1 leaves everything in place for a look.
set -euo pipefail
export LC_ALL=C # byte lengths for Content-Length

POSTGRES_IMAGE=${POSTGRES_IMAGE:-berth/postgres:15}
SYNAPSE_IMAGE=${SYNAPSE_IMAGE:-berth/synapse:latest}
SERVER_NAME=test.local

t0=$(date +%s)
passed=0
failed=0
say() { printf '[smoke %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
ok() { passed=$((passed + 1)); say "ok - $*"; }
not_ok() { failed=$((failed + 1)); say "NOT OK - $*"; }
fatal() { not_ok "$*"; exit 1; }
is() { # ACTUAL EXPECTED DESCRIPTION
  if [[ $1 == "$2" ]]; then ok "$3"; else not_ok "$3 (got '$1', wanted '$2')"; fi
}
like() { # ACTUAL GLOB DESCRIPTION
  # shellcheck disable=SC2053 # $2 is a glob on purpose
  if [[ $1 == $2 ]]; then ok "$3"; else not_ok "$3 (got '$1')"; fi
}
# uids of all processes of container $1, space-separated
uids_of() { docker top "$1" -eo pid,uid | awk 'NR > 1 { print $2 }' | sort -u | paste -sd ' ' -; }

for image in "$POSTGRES_IMAGE" "$SYNAPSE_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "smoke: $image is missing: run images/build.sh first" >&2; exit 2; }
done

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
id=$(rand_hex 4)
uid=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
gid=$uid
db_net=berth-smoke-$id-db
front_net=berth-smoke-$id-front
pg=berth-smoke-$id-postgres
syn=berth-smoke-$id-synapse
root=$(mktemp -d "${TMPDIR:-/tmp}/berth-smoke.XXXXXX")

teardown() {
  local rc=$?
  if [[ $rc != 0 || $failed != 0 ]]; then
    for c in "$pg" "$syn"; do
      if docker inspect "$c" >/dev/null 2>&1; then
        echo "----- last log lines of $c"
        docker logs --tail 40 "$c" 2>&1 || true
      fi
    done
  fi
  if [[ ${BERTH_SMOKE_KEEP:-} == 1 ]]; then
    say "kept: containers $pg $syn, networks $db_net $front_net, data $root"
  else
    docker rm -f -v "$syn" "$pg" >/dev/null 2>&1 || true
    docker network rm "$db_net" "$front_net" >/dev/null 2>&1 || true
    rm -rf "$root"
    say "torn down"
  fi
  say "$passed passed, $failed failed"
  echo "smoke: $passed passed, $failed failed"
  if [[ $failed != 0 && $rc == 0 ]]; then exit 1; fi
}
trap teardown EXIT

# HTTP from the host: curl when present, else bash's /dev/tcp (HTTP/1.0).
# http METHOD URL [BODY [CONTENT-TYPE]] -> response body; fails unless 2xx.
# Sends "Authorization: Bearer $HTTP_TOKEN" when HTTP_TOKEN is set.
# (A subshell, so that a refused /dev/tcp connection cannot end the script.)
HTTP_TOKEN=
http() (
  method=$1 url=$2 body=${3:-} ctype=${4:-application/json}
  if command -v curl >/dev/null 2>&1 && [[ -z ${SMOKE_NO_CURL:-} ]]; then
    args=(-fsS --max-time 20 -X "$method")
    [[ -z $HTTP_TOKEN ]] || args+=(-H "Authorization: Bearer $HTTP_TOKEN")
    [[ -z $body ]] || args+=(-H "Content-Type: $ctype" --data-binary @-)
    printf '%s' "$body" | curl "${args[@]}" "$url"
    exit
  fi
  rest=${url#http://}
  hostport=${rest%%/*} path=/${rest#*/}
  exec 5<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
  {
    printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$method" "$path" "$hostport"
    [[ -z $HTTP_TOKEN ]] || printf 'Authorization: Bearer %s\r\n' "$HTTP_TOKEN"
    [[ -z $body ]] || printf 'Content-Type: %s\r\nContent-Length: %s\r\n' "$ctype" "${#body}"
    printf '\r\n%s' "$body"
  } >&5
  response=$(timeout 20 cat <&5)
  status=$(head -n 1 <<<"$response" | awk '{ print $2 }')
  [[ $status == 2* ]] || { echo "HTTP $status from $url" >&2; exit 1; }
  printf '%s' "${response#*$'\r\n\r\n'}"
)

# wait_until SECONDS COMMAND...: retries COMMAND every second; prints the seconds it took
wait_until() {
  local limit=$1 s
  shift
  s=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) - s < limit )) || { echo "not ready after ${limit}s: $*" >&2; return 1; }
    sleep 1
  done
  echo $(( $(date +%s) - s ))
}

# wait_healthy CONTAINER SECONDS
wait_healthy() {
  local c=$1 limit=$2 s state health
  s=$(date +%s)
  while :; do
    state=$(docker inspect -f '{{.State.Status}}' "$c")
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")
    [[ $health == healthy ]] && { echo $(( $(date +%s) - s )); return 0; }
    [[ $state == running ]] || { echo "$c is $state (exit code $(docker inspect -f '{{.State.ExitCode}}' "$c"))" >&2; return 1; }
    (( $(date +%s) - s < limit )) || { echo "$c not healthy after ${limit}s ($health)" >&2; return 1; }
    sleep 1
  done
}

say "uid:gid $uid:$gid, data in $root, images $POSTGRES_IMAGE + $SYNAPSE_IMAGE"

# -------------------------------------------------------------- networks --
docker network create --driver bridge --internal "$db_net" >/dev/null
docker network create --driver bridge "$front_net" >/dev/null
ok "networks: $db_net (internal, database only), $front_net (Synapse)"

# ---------------------------------------------------------- data dirs --
install -d -m 0700 -o "$uid" -g "$gid" "$root/postgres" "$root/synapse" "$root/secrets"
db_password=$(rand_hex 24)
printf '%s\n' "$db_password" >"$root/secrets/postgres-password"
chown "$uid:$gid" "$root/secrets/postgres-password"
chmod 0400 "$root/secrets/postgres-password"

hardening=(--read-only --cap-drop ALL --security-opt no-new-privileges --user "$uid:$gid" --pids-limit 200)

# -------------------------------------------------------------- postgres --
docker run -d --name "$pg" --hostname postgres \
  "${hardening[@]}" --memory 256m --cpus 0.5 \
  --network "$db_net" \
  --tmpfs /run/postgresql:rw,nosuid,nodev,noexec,size=1m \
  --tmpfs /tmp:rw,nosuid,nodev,noexec,size=16m \
  -v "$root/postgres:/var/lib/postgresql/data" \
  -v "$root/secrets/postgres-password:/run/secrets/postgres-password:ro" \
  -e POSTGRES_USER=synapse -e POSTGRES_DB=synapse \
  -e POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password \
  "$POSTGRES_IMAGE" >/dev/null
ready=$(wait_until 120 docker exec "$pg" pg_isready -q -h /run/postgresql -U synapse -d synapse) || fatal "postgres ready"
secs=$(wait_healthy "$pg" 120) || fatal "postgres healthy"
ok "postgres ready after ${ready}s (initdb included), healthcheck green ${secs}s later"

q() { docker exec -e PGPASSWORD="$db_password" "$pg" psql -h /run/postgresql -U synapse -d synapse -XAtq -c "$1"; }
info=$(q "select current_user, pg_encoding_to_char(encoding), datcollate, datctype from pg_database where datname = 'synapse'")
is "$info" 'synapse|UTF8|C|C' "database synapse: owner synapse, UTF8, collate C, ctype C"
is "$(uids_of "$pg")" "$uid" "postgres processes all run as uid $uid"
if docker exec "$pg" sh -c 'touch /usr/x' 2>/dev/null; then not_ok "postgres root fs is writable"; else ok "postgres root fs is read-only"; fi
if docker exec "$pg" psql -h /run/postgresql -U synapse -d synapse -XAtqc 'select 1' >/dev/null 2>&1; then
  not_ok "postgres accepted a login without a password"
else
  ok "postgres refuses logins without the password (scram-sha-256)"
fi

# --------------------------------------------------------- synapse config --
# What the agent generates: signing key (Synapse's own script) and the config.
docker run --rm "${hardening[@]}" --network none --tmpfs /tmp:rw,nosuid,nodev,noexec,size=16m \
  -v "$root/synapse:/data" --entrypoint /opt/synapse/bin/python \
  "$SYNAPSE_IMAGE" -m synapse._scripts.generate_signing_key -o "/data/$SERVER_NAME.signing.key"
[[ -s $root/synapse/$SERVER_NAME.signing.key ]] || fatal "no signing key"
ok "signing key generated by synapse._scripts.generate_signing_key"

shared_secret=$(rand_hex 32)
cat >"$root/synapse/homeserver.yaml" <<EOF
# Minimal Berth homeserver config (smoke test)
server_name: "$SERVER_NAME"
report_stats: false
signing_key_path: "/data/$SERVER_NAME.signing.key"
media_store_path: "/data/media_store"
registration_shared_secret: "$shared_secret"
macaroon_secret_key: "$(rand_hex 32)"
form_secret: "$(rand_hex 32)"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
# URL previews load the url-preview extra (beautifulsoup4) at start-up
url_preview_enabled: true
url_preview_ip_range_blacklist: ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
  "100.64.0.0/10", "169.254.0.0/16", "192.0.0.0/24", "::1/128", "fe80::/10", "fc00::/7"]
listeners:
  - port: 8008
    type: http
    tls: false
    bind_addresses: ["0.0.0.0"]
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: psycopg2
  args:
    host: "$pg"
    port: 5432
    user: synapse
    password: "$db_password"
    dbname: synapse
    cp_min: 2
    cp_max: 5
EOF
chown "$uid:$gid" "$root/synapse/homeserver.yaml"
chmod 0600 "$root/synapse/homeserver.yaml"

# --------------------------------------------------------------- synapse --
docker create --name "$syn" --hostname synapse \
  "${hardening[@]}" --memory 512m --cpus 0.5 \
  --network "$front_net" -p 127.0.0.1::8008 \
  --tmpfs /tmp:rw,nosuid,nodev,noexec,size=64m \
  -v "$root/synapse:/data" \
  "$SYNAPSE_IMAGE" >/dev/null
docker network connect "$db_net" "$syn"
docker start "$syn" >/dev/null
port=$(docker port "$syn" 8008/tcp | awk -F: 'NR == 1 { print $NF }')
base=http://127.0.0.1:$port
ready=$(wait_until 180 http GET "$base/health") || fatal "synapse ready"
secs=$(wait_healthy "$syn" 180) || fatal "synapse healthy"
ok "synapse answered /health after ${ready}s (schema creation included), healthcheck green ${secs}s later"
health=$(http GET "$base/health") || true
is "$health" OK "GET $base/health = OK (from the host)"
versions=$(http GET "$base/_matrix/client/versions") || true
like "$versions" '*"versions"*' "GET /_matrix/client/versions: ${versions:0:90}..."

is "$(uids_of "$syn")" "$uid" "synapse processes all run as uid $uid"
if docker exec "$syn" sh -c 'touch /opt/x' 2>/dev/null; then not_ok "synapse root fs is writable"; else ok "synapse root fs is read-only"; fi
is "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}' "$syn")" \
  'true [ALL] [no-new-privileges] 200 536870912' "synapse container: ReadonlyRootfs, CapDrop ALL, no-new-privileges, 200 pids, 512 MiB"

# ------------------------------------------------------------ a real user --
user_password=$(rand_hex 12)
if out=$(docker exec "$syn" python -m synapse._scripts.register_new_matrix_user \
  -u smoke -p "$user_password" --no-admin -c /data/homeserver.yaml http://localhost:8008 2>&1); then
  ok "register_new_matrix_user (shared secret): ${out//$'\n'/ }"
else
  not_ok "register_new_matrix_user: $out"
fi
login=$(http POST "$base/_matrix/client/v3/login" \
  "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"smoke\"},\"password\":\"$user_password\"}") || true
like "$login" "*\"user_id\":\"@smoke:$SERVER_NAME\"*" "login as @smoke:$SERVER_NAME from the host (password from the registration)"
HTTP_TOKEN=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$login")

# A 300 kB upload: larger than 100 kB, Twisted spools the request body to a
# temporary file (the tmpfs /tmp), then Synapse writes it to /data/media_store.
payload=$(head -c 225000 /dev/urandom | base64 -w 0)
upload=$(http POST "$base/_matrix/media/v3/upload?filename=smoke.txt" "$payload" text/plain) || true
mxc=$(sed -n 's/.*"content_uri":"mxc:\/\/\([^"]*\)".*/\1/p' <<<"$upload")
if [[ -n $mxc ]]; then
  download=$(http GET "$base/_matrix/client/v1/media/download/$mxc") || true
  is "$(printf '%s' "$download" | sha256sum)" "$(printf '%s' "$payload" | sha256sum)" \
    "media: ${#payload}-byte upload (spooled via /tmp) stored under /data and downloaded intact (mxc://$mxc)"
else
  not_ok "media upload: '$upload'"
fi
HTTP_TOKEN=

rows=$(q "select name from users")
is "$rows" "@smoke:$SERVER_NAME" "users table in PostgreSQL: $rows"

media=$(docker exec "$syn" sh -c 'test -d /data/media_store && echo yes' || true)
is "$media" yes "media store created under /data"

# --------------------------------------------------------------- at rest --
say "idle for 15s, then docker stats:"
sleep 15
docker stats --no-stream --format 'table {{.Name}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.CPUPerc}}\t{{.PIDs}}' "$pg" "$syn"
health=$(docker inspect -f '{{.State.Health.Status}}' "$pg" "$syn" | tr '\n' ' ')
is "$health" 'healthy healthy ' "both still healthy"

# ------------------------------------------------------------ clean stop --
s=$(date +%s)
docker stop -t 30 "$syn" >/dev/null
docker stop -t 30 "$pg" >/dev/null
stop_secs=$(( $(date +%s) - s ))
codes=$(docker inspect -f '{{.State.ExitCode}}' "$syn" "$pg" | tr '\n' ' ')
is "$codes" '0 0 ' "clean stop of both in ${stop_secs}s (exit codes 0)"
# and a restart of postgres on its existing data dir
docker start "$pg" >/dev/null
secs=$(wait_healthy "$pg" 60) || fatal "postgres restart"
is "$(q "select count(*) from users")" 1 "postgres restarted on the existing data in ${secs}s, data intact"
