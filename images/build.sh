#!/usr/bin/env bash
# Builds the images a Berth host runs, without any container registry:
#
#   berth/postgres:15                 PostgreSQL 15 from Debian bookworm
#   berth/synapse:<version>, :latest  Synapse from PyPI on bookworm's Python 3.11
#   berth/upkeep:latest               the state compressor (synapse-auto-compressor
#                                     from PyPI), run by the agent against a
#                                     homeserver's PostgreSQL: a host's own tool,
#                                     also in production (no official image has it)
#
# They stand in for the official postgres and matrixdotorg/synapse images on
# machines that cannot pull (build and CI machines). Each is a Debian
# bookworm minbase rootfs (debootstrap once, copied per image), packages
# installed in a chroot, then `docker import` plus a thin `docker build` layer
# for what import cannot set (HEALTHCHECK, STOPSIGNAL, the entry point files).
#
# Needs: root, a running Docker daemon, debootstrap, and network access to a
# Debian mirror (the one configured for apt on this machine) and to PyPI.
#
# Idempotent: each image is labelled with a hash of its build inputs (this
# script, the files under images/<name>/, the versions); an image whose label
# matches is not rebuilt, so a repeated run takes seconds. --force rebuilds.
# Debian or PyPI updates alone do not change the hash: rebuild with --force
# (or set BERTH_IMAGES_EPOCH to something new) to pick them up.
#
# Usage: images/build.sh [--force] [--only postgres|synapse|upkeep] [--synapse-version X.Y.Z]
# Environment:
#   SYNAPSE_VERSION        Synapse release from PyPI (default below)
#   SYNAPSE_EXTRAS         pip extras (default postgres,url-preview)
#   BERTH_IMAGES_WORKDIR   scratch + caches (default /var/tmp/berth-images)
#   BERTH_DEBIAN_MIRROR    Debian mirror (default: the one apt uses here)
#   BERTH_DEBIAN_SECURITY_MIRROR   ditto for bookworm-security
#   BERTH_IMAGES_EPOCH     any string; changing it invalidates the cache
set -euo pipefail

SUITE=bookworm
PG_MAJOR=15
SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
SYNAPSE_EXTRAS=${SYNAPSE_EXTRAS:-postgres,url-preview}
# 0.1.2, not the newest 0.1.4: 0.1.4's wheel holds an empty cffi stub, no compressor
COMPRESSOR_VERSION=0.1.2
WORK=${BERTH_IMAGES_WORKDIR:-/var/tmp/berth-images}
# Non-root fallback user baked into the images; the agent always passes --user.
DEFAULT_USER=65534:65534

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

force=0
only=(postgres synapse upkeep)
while [[ $# -gt 0 ]]; do
  case $1 in
    --force) force=1 ;;
    --only) [[ ${2:-} == postgres || ${2:-} == synapse || ${2:-} == upkeep ]] || { echo "--only needs postgres, synapse or upkeep" >&2; exit 2; }; only=("$2"); shift ;;
    --synapse-version) [[ -n ${2:-} ]] || { echo "--synapse-version needs a version" >&2; exit 2; }; SYNAPSE_VERSION=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $SYNAPSE_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([a-z0-9.]*)$ ]] || { echo "bad Synapse version: $SYNAPSE_VERSION" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
t0=$(date +%s)
exec 3>&1 4>&2 # 3, 4: the caller's stdout and stderr; 1 and 2 go to the log while building
progress() { printf '[images %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*" >&3; }
die() { printf 'images/build.sh: %s\n' "$*" >&4; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, chroot)"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info fails)"

mkdir -p "$WORK/logs" "$WORK/cache/debs" "$WORK/cache/apt" "$WORK/cache/pip"
exec 9>"$WORK/.lock"
flock 9 # one build at a time on this machine
LOG=$WORK/logs/build.log # the last build's log (a run that builds nothing keeps it)

# ---------------------------------------------------------------- caching --

# hash of everything that goes into one image
inputs_hash() {
  {
    echo "berth-images/1 $SUITE"
    cat "$here/build.sh"
    case $1 in
      postgres) echo "postgresql-$PG_MAJOR"; cat "$here/postgres/"* ;;
      synapse) echo "matrix-synapse[$SYNAPSE_EXTRAS]==$SYNAPSE_VERSION"; cat "$here/synapse/"* ;;
      upkeep) echo "synapse-auto-compressor==$COMPRESSOR_VERSION"; cat "$here/upkeep/"* ;;
    esac
    echo "epoch=${BERTH_IMAGES_EPOCH:-}"
  } | sha256sum | cut -c1-20
}
label_of() { docker image inspect -f '{{ index .Config.Labels "org.berth.build-hash" }}' "$1" 2>/dev/null || true; }
tags_of() {
  case $1 in
    postgres) echo "berth/postgres:$PG_MAJOR" ;;
    synapse) echo "berth/synapse:$SYNAPSE_VERSION berth/synapse:latest" ;;
    upkeep) echo "berth/upkeep:latest" ;;
  esac
}

# ------------------------------------------------------------ the mirror --

# first URI that apt here uses for SUITE (main), from one-line or deb822 sources
find_mirror() {
  local suite=$1 f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      if [[ -r $f ]]; then
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                                         if ($(i + 1) == s) print $i }' "$f"
      fi
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      if [[ -r $f ]]; then
        awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
          { t = ""; u = ""; su = ""
            for (j = 1; j <= NF; j++) {
              if ($j ~ /^Types:/) t = $j; else if ($j ~ /^URIs:/) u = $j; else if ($j ~ /^Suites:/) su = $j }
            sub(/^Types:/, "", t); sub(/^URIs:[ \t]*/, "", u); sub(/^Suites:/, "", su)
            if ((" " t " ") ~ /[ \t]deb[ \t]/) { n = split(su, a, /[ \t]+/)
              for (k = 1; k <= n; k++) if (a[k] == s) { split(u, b, /[ \t]+/); print b[1] } } }' "$f"
      fi
    done
  } | grep -E '^(https?|file):' | head -n 1 || true
}
MIRROR=${BERTH_DEBIAN_MIRROR:-$(find_mirror "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${BERTH_DEBIAN_SECURITY_MIRROR:-$(find_mirror "$SUITE-security")}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# ---------------------------------------------------------------- chroots --

mounts=()
scratch_dirs=()
cleanup() {
  local rc=$? i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  mounts=()
  for i in "${scratch_dirs[@]}"; do rm -rf --one-file-system "$i"; done
  if [[ $rc != 0 ]]; then
    printf 'images/build.sh: FAILED after %ss; last lines of %s:\n' "$(( $(date +%s) - t0 ))" "$LOG" >&4
    tail -n 40 "$LOG" >&4
  fi
}
trap cleanup EXIT

chroot_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  if [[ -n ${!v:-} ]]; then chroot_env+=("$v=${!v}"); fi
done
in_root() { local r=$1; shift; chroot "$r" /usr/bin/env -i "${chroot_env[@]}" "$@"; }

# proc, and the apt/pip download caches, while building in $1
mount_for_build() {
  local r=$1
  mount -t proc proc "$r/proc"; mounts+=("$r/proc")
  mkdir -p "$WORK/cache/apt/partial" "$r/root/.cache/pip"
  mount --bind "$WORK/cache/apt" "$r/var/cache/apt/archives"; mounts+=("$r/var/cache/apt/archives")
  mount --bind "$WORK/cache/pip" "$r/root/.cache/pip"; mounts+=("$r/root/.cache/pip")
}
unmount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
  mounts=()
}

# Debian bookworm minbase, configured for small images; cached in $WORK/base
make_base() {
  local dir=$WORK/base want
  want=$( { declare -f make_base; echo "$SUITE"; } | sha256sum | cut -c1-20)
  if [[ -d $dir && $(cat "$WORK/base.hash" 2>/dev/null) == "$want" ]]; then
    progress "base rootfs: cached ($dir)"
    return
  fi
  progress "base rootfs: debootstrap --variant=minbase $SUITE from $MIRROR"
  rm -rf --one-file-system "$dir" "$dir.new" "$WORK/base.hash"
  debootstrap --variant=minbase --cache-dir="$WORK/cache/debs" "$SUITE" "$dir.new" "$MIRROR"
  local r=$dir.new
  rm -f "$r"/var/cache/apt/archives/*.deb # debootstrap leaves copies of what it installed
  # never unpack docs, man pages or translations (copyright files stay)
  cat >"$r/etc/dpkg/dpkg.cfg.d/berth-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOF
  cat >"$r/etc/apt/apt.conf.d/berth" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
  # no daemons started by package scripts inside the chroot
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
  chmod 0755 "$r/usr/sbin/policy-rc.d"
  for d in dev/null dev/zero dev/urandom dev/random; do
    [[ -c $r/$d ]] || die "debootstrap left no /$d in the rootfs"
  done
  mv "$dir.new" "$dir"
  echo "$want" >"$WORK/base.hash"
}

# copy of the base, ready for apt, in $ROOTFS: $1 = name
new_rootfs() {
  local r=$WORK/rootfs-$1
  ROOTFS=$r
  rm -rf --one-file-system "$r"
  cp -a "$WORK/base" "$r"
  scratch_dirs+=("$r")
  cat >"$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  # machines whose mirror serves frozen snapshots turn off Valid-Until checks; follow them
  if apt-config dump 2>/dev/null | grep -qi '^Acquire::Check-Valid-Until "false"'; then
    echo 'Acquire::Check-Valid-Until "false";' >"$r/etc/apt/apt.conf.d/99berth-build"
  fi
  mount_for_build "$r"
  in_root "$r" apt-get update -q
  in_root "$r" apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade
}

# drop caches, docs and build-only bits, then import into Docker as $2
import_rootfs() {
  local r=$1 ref=$2
  unmount_all
  rm -f "$r/etc/apt/apt.conf.d/99berth-build" "$r/usr/sbin/policy-rc.d"
  rm -rf "${r:?}"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/debconf/*-old \
    "$r"/var/lib/dpkg/*-old "$r"/var/log/* "$r"/root/.cache "$r"/tmp/* "$r"/var/tmp/* \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/*
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  # Docker bind-mounts its own at run time; the build machine's must not ship
  : >"$r/etc/resolv.conf"
  echo berth >"$r/etc/hostname"
  tar --numeric-owner -C "$r" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
    docker import --message "berth images/build.sh" - "$ref" >/dev/null
}

# the thin layer: $1 = context dir with a Dockerfile, rest = tags
docker_build() {
  local ctx=$1 tag args=()
  shift
  for tag in "$@"; do args+=(-t "$tag"); done
  # the classic builder takes FROM from the local store and needs no registry
  DOCKER_BUILDKIT=0 docker build --pull=false --rm --force-rm "${args[@]}" "$ctx"
}

# old builds of ours that lost their tags
prune_old() {
  local ids
  ids=$(docker images -q --filter dangling=true --filter "label=org.berth.image=$1" 2>/dev/null | sort -u)
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086
    docker rmi $ids >/dev/null 2>&1 || true # still used by a container: keep it
  fi
}

# ---------------------------------------------------------------- images --

PIP_ENV=(PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=120 PIP_PROGRESS_BAR=off)

# pip install, wheels only, into the venv $2 of the rootfs $1: rest = requirements
pip_install() {
  local r=$1 venv=$2 ca env=("${PIP_ENV[@]}")
  shift 2
  # a machine behind a TLS-inspecting proxy trusts an extra CA: lend pip this
  # machine's bundle for the build (it is removed before import)
  ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
  if [[ -r $ca ]]; then
    cp "$ca" "$r/tmp/berth-build-ca.pem"
    env+=(PIP_CERT=/tmp/berth-build-ca.pem)
  fi
  in_root "$r" env "${env[@]}" "$venv/bin/pip" install --only-binary=:all: "$@"
  rm -f "$r/tmp/berth-build-ca.pem"
}

build_postgres() {
  local hash=$1 r ctx ver
  new_rootfs postgres
  r=$ROOTFS
  # the package must not create a "main" cluster in the image
  mkdir -p "$r/etc/postgresql-common"
  echo 'create_main_cluster = false' >"$r/etc/postgresql-common/createcluster.conf"
  progress "postgres: apt-get install postgresql-$PG_MAJOR libnss-wrapper"
  in_root "$r" apt-get -y -q install "postgresql-$PG_MAJOR" libnss-wrapper
  # shellcheck disable=SC2016 # ${Version} is dpkg-query's, not ours
  ver=$(in_root "$r" dpkg-query -W -f '${Version}' "postgresql-$PG_MAJOR")
  mkdir -p "$r/var/lib/postgresql/data" "$r/run/postgresql"
  chmod 0700 "$r/var/lib/postgresql/data"
  chmod 3777 "$r/run/postgresql"
  in_root "$r" "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" --version
  progress "postgres: importing rootfs (PostgreSQL $ver)"
  import_rootfs "$r" "berth-build/postgres:$hash"

  ctx=$(mktemp -d "$WORK/ctx-postgres.XXXXXX"); scratch_dirs+=("$ctx")
  install -m 0755 "$here/postgres/docker-entrypoint.sh" "$ctx/docker-entrypoint.sh"
  install -m 0755 "$here/postgres/healthcheck.sh" "$ctx/healthcheck.sh"
  cat >"$ctx/Dockerfile" <<EOF
FROM berth-build/postgres:$hash
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY healthcheck.sh /usr/local/bin/berth-healthcheck
ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 \\
    PGDATA=/var/lib/postgresql/data
LABEL org.berth.image=postgres \\
      org.berth.build-hash=$hash \\
      org.berth.postgres-version=$ver \\
      org.opencontainers.image.title=berth/postgres \\
      org.opencontainers.image.version=$ver \\
      org.opencontainers.image.base.name=debian:$SUITE
USER $DEFAULT_USER
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 CMD ["/usr/local/bin/berth-healthcheck"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
EOF
  progress "postgres: docker build (entry point, healthcheck)"
  docker_build "$ctx" "berth/postgres:$PG_MAJOR"
  docker rmi "berth-build/postgres:$hash" >/dev/null
  docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    "berth/postgres:$PG_MAJOR" postgres --version >&3
}

build_synapse() {
  local hash=$1 r ctx jemalloc
  new_rootfs synapse
  r=$ROOTFS
  progress "synapse: apt-get install python3 python3-venv python3-psycopg2 libjemalloc2 ca-certificates"
  in_root "$r" apt-get -y -q install python3 python3-venv python3-psycopg2 libjemalloc2 ca-certificates
  jemalloc=$(cd "$r" && find usr/lib -name libjemalloc.so.2 | head -n 1)
  [[ -n $jemalloc ]] || die "libjemalloc.so.2 not found in the synapse rootfs"

  progress "synapse: pip install matrix-synapse[$SYNAPSE_EXTRAS]==$SYNAPSE_VERSION (venv on Debian's python3)"
  # --system-site-packages: psycopg2 comes from Debian (python3-psycopg2), so
  # nothing needs a compiler; --only-binary makes sure nothing tries.
  in_root "$r" python3 -m venv --system-site-packages /opt/synapse
  pip_install "$r" /opt/synapse "matrix-synapse[$SYNAPSE_EXTRAS]==$SYNAPSE_VERSION"
  in_root "$r" env "${PIP_ENV[@]}" /opt/synapse/bin/pip check
  in_root "$r" /opt/synapse/bin/pip freeze --all >"$r/opt/synapse/berth-pip-freeze.txt"
  # Synapse's own check of its (and the extras') requirements, then the CLI
  local extra checks="check_requirements()"
  for extra in ${SYNAPSE_EXTRAS//,/ }; do checks+="; check_requirements('$extra')"; done
  in_root "$r" /opt/synapse/bin/python -c "from synapse.util.check_dependencies import check_requirements; $checks"
  in_root "$r" /opt/synapse/bin/python -m synapse.app.homeserver --help >/dev/null
  mkdir -p "$r/data"
  progress "synapse: importing rootfs"
  import_rootfs "$r" "berth-build/synapse:$hash"

  ctx=$(mktemp -d "$WORK/ctx-synapse.XXXXXX"); scratch_dirs+=("$ctx")
  install -m 0644 "$here/synapse/healthcheck.py" "$ctx/healthcheck.py"
  cat >"$ctx/Dockerfile" <<EOF
FROM berth-build/synapse:$hash
COPY healthcheck.py /usr/local/lib/berth/healthcheck.py
ENV PATH=/opt/synapse/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    LD_PRELOAD=/$jemalloc
LABEL org.berth.image=synapse \\
      org.berth.build-hash=$hash \\
      org.berth.synapse-version=$SYNAPSE_VERSION \\
      org.opencontainers.image.title=berth/synapse \\
      org.opencontainers.image.version=$SYNAPSE_VERSION \\
      org.opencontainers.image.base.name=debian:$SUITE
WORKDIR /data
USER $DEFAULT_USER
EXPOSE 8008 8448
HEALTHCHECK --interval=15s --timeout=6s --start-period=120s --retries=3 CMD ["/opt/synapse/bin/python", "/usr/local/lib/berth/healthcheck.py"]
ENTRYPOINT ["/opt/synapse/bin/python", "-m", "synapse.app.homeserver"]
CMD ["--config-path", "/data/homeserver.yaml"]
EOF
  progress "synapse: docker build (healthcheck)"
  docker_build "$ctx" "berth/synapse:$SYNAPSE_VERSION" berth/synapse:latest
  docker rmi "berth-build/synapse:$hash" >/dev/null
  docker run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    "berth/synapse:$SYNAPSE_VERSION" --help >/dev/null
}

build_upkeep() {
  local hash=$1 r ctx
  new_rootfs upkeep
  r=$ROOTFS
  progress "upkeep: apt-get install python3 python3-venv"
  in_root "$r" apt-get -y -q install python3 python3-venv
  progress "upkeep: pip install synapse-auto-compressor==$COMPRESSOR_VERSION"
  in_root "$r" python3 -m venv /opt/upkeep
  pip_install "$r" /opt/upkeep "synapse-auto-compressor==$COMPRESSOR_VERSION"
  install -m 0644 "$here/upkeep/compress_state.py" "$r/opt/upkeep/compress_state.py"
  in_root "$r" /opt/upkeep/bin/python -c "import synapse_auto_compressor; synapse_auto_compressor.compress_state_events_table"
  progress "upkeep: importing rootfs"
  import_rootfs "$r" "berth-build/upkeep:$hash"

  ctx=$(mktemp -d "$WORK/ctx-upkeep.XXXXXX"); scratch_dirs+=("$ctx")
  cat >"$ctx/Dockerfile" <<EOF
FROM berth-build/upkeep:$hash
ENV PATH=/opt/upkeep/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
LABEL org.berth.image=upkeep \\
      org.berth.build-hash=$hash \\
      org.berth.compressor-version=$COMPRESSOR_VERSION \\
      org.opencontainers.image.title=berth/upkeep \\
      org.opencontainers.image.version=$COMPRESSOR_VERSION \\
      org.opencontainers.image.base.name=debian:$SUITE
USER $DEFAULT_USER
ENTRYPOINT ["/opt/upkeep/bin/python", "/opt/upkeep/compress_state.py"]
EOF
  progress "upkeep: docker build"
  docker_build "$ctx" berth/upkeep:latest
  docker rmi "berth-build/upkeep:$hash" >/dev/null
}

# ------------------------------------------------------------------ main --

exec >>"$LOG" 2>&1
built=0
for name in "${only[@]}"; do
  hash=$(inputs_hash "$name")
  read -r -a tags <<<"$(tags_of "$name")"
  if [[ $force == 0 && $(label_of "${tags[0]}") == "$hash" ]]; then
    for tag in "${tags[@]:1}"; do
      [[ $(label_of "$tag") == "$hash" ]] || docker tag "${tags[0]}" "$tag"
    done
    progress "$name: up to date (${tags[*]}, inputs $hash)"
    continue
  fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  if [[ $built == 0 ]]; then
    : >"$LOG"
    make_base
  fi
  s=$(date +%s)
  "build_$name" "$hash"
  unmount_all
  rm -rf --one-file-system "$WORK/rootfs-$name"
  prune_old "$name"
  progress "$name: built ${tags[*]} in $(( $(date +%s) - s ))s, $(docker image inspect -f '{{.Size}}' "${tags[0]}" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  built=$((built + 1))
done
progress "done in $(( $(date +%s) - t0 ))s (log: $LOG)"
