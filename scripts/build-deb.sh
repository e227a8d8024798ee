#!/usr/bin/env bash
# Builds the Debian package of chatvault.
#
#   scripts/build-deb.sh [--profile PROFILE] [--no-build] [--fast]
#
# PROFILE is the cargo profile of the binary packaged: `dist` (the default: whole-program
# optimisation, what is shipped), `release` or `dev`. --no-build packages the binary the
# profile last built; --fast compresses less (tests). Installs cargo-deb if missing.
# Prints the package's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatvault/target}"

PROFILE=dist
BUILD=1
FAST=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --fast) FAST=(--fast); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ensure_cargo_deb
if [ "$BUILD" = 1 ]; then
  cargo build --locked --profile "$PROFILE" -p chatvault
fi
BIN="$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/chatvault"
[ -x "$BIN" ] || { echo "no binary at $BIN: build it first (or drop --no-build)" >&2; exit 1; }

# The man pages and completions come from the binary's own command definitions.
GENERATED=packaging/generated
rm -rf "$GENERATED"
mkdir -p "$GENERATED/man" "$GENERATED/completions"
"$BIN" man-pages --out "$GENERATED/man"
gzip -9n "$GENERATED"/man/*.1
"$BIN" completions bash >"$GENERATED/completions/chatvault.bash"
"$BIN" completions zsh >"$GENERATED/completions/_chatvault"
"$BIN" completions fish >"$GENERATED/completions/chatvault.fish"

OUT="$CARGO_TARGET_DIR/debian"
mkdir -p "$OUT"
cargo deb -p chatvault --no-build --profile "$PROFILE" "${FAST[@]}" --output "$OUT" | tail -1
