#!/usr/bin/env bash
# Build and install the TimescaleDB extension from its vendored source (../shared/vendor) when
# the machine lacks it, with one patch (timescaledb-2.28.3-bgw-portal.patch: background jobs on
# PostgreSQL 15.20). Idempotent: our installed build of the same version and patch costs nothing,
# and a TimescaleDB that came from elsewhere is left alone. Where the source is absent, or we are
# not root, it says so and the project uses plain PostgreSQL.
set -euo pipefail
say() { echo "timescaledb: $*"; }

version=2.28.3
tarball=${VITALS_TIMESCALEDB_SOURCE:-../shared/vendor/timescaledb-$version.tar.gz}
build_root=${VITALS_BUILD_DIR:-.local/build}

pg_config=$(ls /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_config" ]; then
    say "no PostgreSQL server on this machine (run make system-deps); skipped"
    exit 0
fi
pg_version=$("$pg_config" --version)
libdir=$("$pg_config" --pkglibdir)
extdir="$("$pg_config" --sharedir)/extension"
patch_file="$(dirname "$0")/timescaledb-$version-bgw-portal.patch"
# Our builds carry a stamp naming the patch they include; an extension without one came from
# elsewhere (a package manager) and is left alone.
stamp="$libdir/timescaledb-$version.vitalrisk"
want_stamp="built by vitalrisk from timescaledb-$version.tar.gz with $(sha256sum "$patch_file" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -f "$libdir/timescaledb-$version.so" ] &&
   [ -f "$extdir/timescaledb--$version.sql" ]; then
    say "$version installed for $pg_version"
    exit 0
fi
if [ ! -f "$stamp" ] && [ -f "$extdir/timescaledb.control" ]; then
    say "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$extdir/timescaledb.control") installed for $pg_version, not built by vitalrisk: left as it is"
    exit 0
fi
if [ ! -f "$tarball" ]; then
    say "source $tarball not found: using plain PostgreSQL (docs/storage.md says how to get the extension)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "installing into $pg_version needs root (run: sudo make timescaledb); using plain PostgreSQL meanwhile"
    exit 0
fi
if [ ! -f "$("$pg_config" --includedir-server)/postgres.h" ]; then
    say "the PostgreSQL server headers are missing (run: make system-deps)"
    exit 1
fi
command -v cmake >/dev/null || { say "cmake is missing (run: make system-deps)"; exit 1; }
command -v patch >/dev/null || { say "patch is missing (run: make system-deps)"; exit 1; }
sums="$(dirname "$tarball")/SHA256SUMS"
if [ -f "$sums" ]; then
    want=$(awk -v f="$(basename "$tarball")" '$2 == f {print $1}' "$sums")
    got=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$want" != "$got" ]; then
        say "$tarball does not match its SHA256SUMS entry; not building it"
        exit 1
    fi
fi

say "building $version from $tarball for $pg_version (about two minutes on two cores) ..."
mkdir -p "$build_root"
src="$build_root/timescaledb-$version"
rm -rf "$src"
tar -xzf "$tarball" -C "$build_root"
log="$PWD/$build_root/timescaledb-build.log"
if ! patch -s -p1 -d "$src" < "$patch_file"; then
    say "$patch_file does not apply to the source; not building it"
    exit 1
fi
if ! (cd "$src" &&
      ./bootstrap -DPG_CONFIG="$pg_config" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF &&
      make -C build -j"$(nproc)" && make -C build install) >"$log" 2>&1; then
    say "the build failed; last lines of $log:"
    tail -n 20 "$log"
    exit 1
fi
rm -rf "$src"
echo "$want_stamp" > "$stamp"
say "$version installed for $pg_version (with $(basename "$patch_file"))"
