# Sourced by the scripts that need tools cargo installs (the manual's mdBook, cargo-deb):
# pinned versions, built once into a cache outside the clone and reused.
TOOLS_DIR="${CHATVAULT_TOOLS_DIR:-$HOME/.cache/chatvault/tools}"
export PATH="$TOOLS_DIR/bin:$PATH"

# ensure_tool CRATE VERSION BINARY [cargo install args…]
ensure_tool() {
  local crate=$1 version=$2 binary=$3
  shift 3
  if "$TOOLS_DIR/bin/$binary" --version 2>/dev/null | grep -qF "$version"; then
    return
  fi
  printf '[tools] installing %s %s into %s\n' "$crate" "$version" "$TOOLS_DIR" >&2
  CARGO_TARGET_DIR="$TOOLS_DIR/build" cargo install --quiet --locked --root "$TOOLS_DIR" \
    --version "$version" "$crate" "$@"
}

ensure_mdbook() {
  ensure_tool mdbook 0.5.4 mdbook --no-default-features --features search
}

ensure_cargo_deb() {
  ensure_tool cargo-deb 3.8.0 cargo-deb
}
