#!/usr/bin/env bash
# A newcomer's first build, measured: from an empty cargo cache and an empty target
# directory, the README's first command (`cargo run --release -p chatvault -- demo`) until
# the console answers on port 8480; then, optionally, the dist profile's clean build.
#
#   bash benches/first-build.sh [--dist]
#
# Uses a private, empty CARGO_HOME and target directory under CHATVAULT_BENCH_DIR (default
# /tmp/chatvault-first-build), so nothing already built or downloaded helps; the
# toolchain itself is the machine's. Prints one line per measurement.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${CHATVAULT_BENCH_DIR:-/tmp/chatvault-first-build}
DIST=0
[ "${1:-}" = --dist ] && DIST=1
log() { printf '[first-build] %s\n' "$*" >&2; }

rm -rf "$WORK"
mkdir -p "$WORK/cargo-home"
# rustup's proxies find the toolchain through RUSTUP_HOME, which stays as it is.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export CARGO_HOME="$WORK/cargo-home"
# FIRST_BUILD_TARGET_DIR may name a shared target directory whose release/ (and dist/)
# folders do not exist yet: the build is as clean, and its result is then reused.
export CARGO_TARGET_DIR="${FIRST_BUILD_TARGET_DIR:-$WORK/target}"
for profile in release dist; do
  [ -e "$CARGO_TARGET_DIR/$profile" ] && { log "$CARGO_TARGET_DIR/$profile exists: not a clean build"; exit 1; }
done
CARGO=$(command -v cargo)
echo "commit $(cd "$ROOT" && git rev-parse --short HEAD), $(nproc) cores, $("$CARGO" --version)"

curl_ready() { curl -fsS -o /dev/null "http://127.0.0.1:8480/console/" 2>/dev/null; }
curl_ready && { log "something already answers on port 8480: stop it first"; exit 1; }

log "cargo run --release -p chatvault -- demo (clean)"
start=$(date +%s)
# cargo run replaces itself with the program, so the job is the demo itself and stops
# with it.
(cd "$ROOT" && CHATVAULT_DATA_DIR="$WORK/demo-data" exec "$CARGO" run --locked --release -p chatvault -- demo \
  >"$WORK/demo.out" 2>"$WORK/demo.err") &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
built=""
until curl_ready; do
  kill -0 "$DEMO" 2>/dev/null || { tail -20 "$WORK/demo.err" >&2; log "the demo exited"; exit 1; }
  if [ -z "$built" ] && grep -q 'Running `' "$WORK/demo.err" 2>/dev/null; then
    built=$(( $(date +%s) - start ))
  fi
  sleep 1
done
answered=$(( $(date +%s) - start ))
kill "$DEMO" 2>/dev/null || true
wait "$DEMO" 2>/dev/null || true
echo "release: clean build ${built}s, console answering on :8480 after ${answered}s ($(( answered / 60 )) min $(( answered % 60 )) s)"
grep -E 'Compiling polars |Finished' "$WORK/demo.err" | tail -1 >&2 || true

if [ "$DIST" = 1 ]; then
  log "cargo build --profile dist -p chatvault (clean target, warm download cache)"
  start=$(date +%s)
  (cd "$ROOT" && "$CARGO" build --locked --profile dist -p chatvault 2>"$WORK/dist.err")
  took=$(( $(date +%s) - start ))
  size=$(stat -c %s "$CARGO_TARGET_DIR/dist/chatvault")
  echo "dist: clean build ${took}s ($(( took / 60 )) min $(( took % 60 )) s), binary $(( size / 1048576 )) MiB"
fi
