#!/usr/bin/env bash
# Runs the whole test suite on any machine: installs and starts what the tests need.
#
#   scripts/test.sh [extra cargo test args]
#
# Cosmos DB: installs the emulator's npm packages (tests start and stop it themselves).
# OpenAPI: installs schemathesis and openapi-spec-validator into a virtualenv
# (CHATVAULT_TEST_VENV, default ~/.cache/chatvault/test-venv).
# After the Rust tests: the README's first command (a release build, then `demo` answering
# on port 8480), the manual (mdBook, links checked) and the Debian package
# (scripts/test-deb.sh, as root).
# PostgreSQL: uses CHATVAULT_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
# When nothing answers there, a private server from Debian's `postgresql` package is
# started in a temporary directory (the package is installed if missing) and stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are reused between runs when the target directory lives outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatvault/target}"
export CHATVAULT_TEST_POSTGRES_URL="${CHATVAULT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

log() { printf '[test.sh] %s\n' "$*" >&2; }

pg_answers() {
  python3 - "$1" <<'PY'
import socket, sys
from urllib.parse import urlparse
u = urlparse(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

PG_DIR=""
cleanup() {
  if [ -n "$PG_DIR" ]; then
    log "stopping private PostgreSQL"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
trap cleanup EXIT

start_private_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PG_DIR=$(mktemp -d /tmp/chatvault-pg.XXXXXX)
  chown postgres "$PG_DIR"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log "starting a private PostgreSQL on 127.0.0.1:$port"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres test
  export CHATVAULT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/test"
}

if pg_answers "$CHATVAULT_TEST_POSTGRES_URL"; then
  log "using PostgreSQL at $CHATVAULT_TEST_POSTGRES_URL"
else
  log "no PostgreSQL answers at $CHATVAULT_TEST_POSTGRES_URL"
  start_private_postgres
fi

# The Cosmos DB source tests run a real emulator (@vercel/cosmosdb-server from npm).
log "installing the Cosmos DB test emulator"
npm ci --prefix tests/cosmos-emulator --no-audit --no-fund --loglevel=error

# The console tests (tests/console.rs) drive Debian's Chromium through chromedriver and
# check each page with axe-core from npm.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing Chromium and chromedriver from Debian's packages"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-liberation >/dev/null
fi
log "installing axe-core for the console's accessibility checks"
npm ci --prefix tests/axe --no-audit --no-fund --loglevel=error

# Python tools the Rust tests call: a third-party OData client (tests/odata.rs), an
# OpenAPI validator and a schema-driven fuzzer (tests/openapi.rs), from PyPI into a
# private virtualenv outside the clone.
export CHATVAULT_TEST_VENV="${CHATVAULT_TEST_VENV:-$HOME/.cache/chatvault/test-venv}"
if [ ! -x "$CHATVAULT_TEST_VENV/bin/python" ]; then
  log "creating the test virtualenv in $CHATVAULT_TEST_VENV"
  python3 -m venv "$CHATVAULT_TEST_VENV"
fi
log "installing the Python test tools into $CHATVAULT_TEST_VENV"
"$CHATVAULT_TEST_VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt

# The manual is an mdBook; the package test needs cargo-deb (both pinned, cached).
source scripts/tools.sh
ensure_mdbook
ensure_cargo_deb

cargo test --workspace --locked "$@"

# The README's first command, as a newcomer runs it: it must build with the profile it
# names and answer on port 8480 (in a throw-away data directory).
log "the README's first command: cargo run --release -p chatvault -- demo"
if curl -fsS -o /dev/null http://127.0.0.1:8480/ 2>/dev/null; then
  log "something already answers on port 8480, where the README's first command serves: stop it first"
  exit 1
fi
DEMO_DIR=$(mktemp -d /tmp/chatvault-demo.XXXXXX)
cargo build --locked --release -p chatvault
# cargo run replaces itself with the program, so the job is the demo itself.
(CHATVAULT_DATA_DIR="$DEMO_DIR/data" CHATVAULT_LOG=warn \
  exec cargo run -q --locked --release -p chatvault -- demo >"$DEMO_DIR/out" 2>&1) &
DEMO_PID=$!
for _ in $(seq 1 240); do
  curl -fsS -o /dev/null http://127.0.0.1:8480/console/ 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$DEMO_DIR/out" >&2; log "the demo exited"; exit 1; }
  sleep 0.5
done
curl -fsS -o /dev/null http://127.0.0.1:8480/console/ || { cat "$DEMO_DIR/out" >&2; exit 1; }
grep -q '^cv_' "$DEMO_DIR/out" || { cat "$DEMO_DIR/out" >&2; log "the demo printed no key"; exit 1; }
kill "$DEMO_PID" 2>/dev/null || true
wait "$DEMO_PID" 2>/dev/null || true
rm -rf "$DEMO_DIR"

# The manual: built, with every internal link and anchor resolving.
log "building the manual"
mdbook build docs
python3 scripts/check-links.py docs/book

# The Debian package: installed, run as its service user, purged.
if [ "$(id -u)" = 0 ]; then
  bash scripts/test-deb.sh --profile release
else
  log "skipping the package test: it installs a package, so it needs root"
fi
