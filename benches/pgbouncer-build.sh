#!/usr/bin/env bash
# Builds a newer PgBouncer than Debian 12's 1.18 from Debian's own source package, for the
# comparisons 1.18 cannot make (`-M prepared` in transaction mode needs 1.21's
# max_prepared_statements). Prints the binary's path; use it as PGBOUNCER_BIN for benches/e2e.sh.
#
# Usage: [PGB_SUITE=trixie] [PGB_DIR=/tmp/pgbouncer-build] bash benches/pgbouncer-build.sh
#   The upstream tarball of the suite's source package comes from deb.debian.org, its SHA-256
#   sum checked against the suite's Sources index (Debian's packaging patches, paths and service
#   files, are not applied: nothing the benchmark uses). The build needs curl, xz, a C compiler,
#   make, pkg-config and the libevent, c-ares and OpenSSL headers (apt-get installed when missing
#   and running as root). Built once per version: a second run only prints the path.
set -euo pipefail
SUITE=${PGB_SUITE:-trixie}
DIR=${PGB_DIR:-/tmp/pgbouncer-build}
MIRROR=${PGB_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$DIR"
cd "$DIR"

log() { echo "[pgbouncer-build] $*" >&2; }
die() {
  log "$*"
  exit 1
}

missing=0
for h in /usr/include/event2/event.h /usr/include/ares.h /usr/include/openssl/ssl.h; do
  [ -e "$h" ] || missing=1
done
for c in cc make pkg-config curl xz; do
  command -v "$c" >/dev/null || missing=1
done
if [ $missing = 1 ]; then
  [ "$(id -u)" = 0 ] || die "needs build-essential pkg-config libevent-dev libc-ares-dev libssl-dev (apt-get install, as root)"
  log "installing the build's packages"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(build-essential pkg-config libevent-dev libc-ares-dev libssl-dev xz-utils curl)
  apt-get install -y -qq "${pkgs[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null; }
fi

# The suite's source index: the pgbouncer stanza's version, directory and files.
curl -fsS "$MIRROR/dists/$SUITE/main/source/Sources.xz" -o Sources.xz || die "cannot fetch $SUITE's Sources index"
xz -dc Sources.xz >Sources
stanza=$(awk '/^Package: pgbouncer$/{p=1} p&&/^$/{exit} p' Sources)
[ -n "$stanza" ] || die "no pgbouncer source package in $SUITE"
version=$(awk '/^Version:/{print $2; exit}' <<<"$stanza")
directory=$(awk '/^Directory:/{print $2; exit}' <<<"$stanza")
upstream=${version%-*}
upstream=${upstream#*:}
bin="$DIR/pgbouncer-$upstream/pgbouncer"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
# "Checksums-Sha256:" lists "sha256 size name", one per line, each starting with a space.
files=$(awk '/^Checksums-Sha256:/{f=1; next} f&&/^ /{print $1, $3; next} f{exit}' <<<"$stanza")
read -r sum tarball < <(grep '\.orig\.tar\.gz$' <<<"$files") || die "no upstream tarball in the source package"
log "fetching $tarball"
curl -fsS "$MIRROR/$directory/$tarball" -o "$tarball" || die "cannot fetch $tarball"
echo "$sum  $tarball" | sha256sum -c --quiet - || die "$tarball: SHA-256 sum does not match the Sources index"

rm -rf "pgbouncer-$upstream"
tar xzf "$tarball"
cd "pgbouncer-$upstream"
log "building PgBouncer $version ($SUITE)"
# The tarball carries its man pages: no pandoc. No PAM, no systemd: not used by the benchmarks.
./configure --without-pam --without-systemd >"$DIR/configure.log" 2>&1 ||
  die "configure failed: $DIR/configure.log"
make -j"$(nproc)" >"$DIR/make.log" 2>&1 || die "make failed: $DIR/make.log"
[ -x ./pgbouncer ] || die "no pgbouncer binary after make"
# PostgreSQL refuses root and so does PgBouncer: the postgres user must be able to run it.
chmod -R a+rX "$DIR"
echo "$bin"
