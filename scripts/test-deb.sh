#!/usr/bin/env bash
# The package test: builds the Debian package, installs it with dpkg, checks what it put
# where, runs the systemd unit's ExecStart line as the chatvault user (systemd itself does
# not run here), checks that the service answers, then purges the package and checks
# that it left nothing but the data.
#
#   scripts/test-deb.sh [--profile PROFILE]
#
# PROFILE: the cargo profile whose already-built binary is packaged (default `release`,
# which scripts/test.sh builds as the README's first command). Needs root (dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
if [ "${1:-}" = --profile ]; then PROFILE=$2; fi
log() { printf '[test-deb] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root: the test installs a package"

UNIT=/usr/lib/systemd/system/chatvault.service
WORK=$(mktemp -d /tmp/chatvault-deb.XXXXXX)
had_user=0; getent passwd chatvault >/dev/null && had_user=1
had_data=0; [ -e /var/lib/chatvault ] && had_data=1
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  dpkg --purge chatvault >/dev/null 2>&1 || true
  # Only what this test created goes.
  [ "$had_data" = 0 ] && rm -rf /var/lib/chatvault
  [ "$had_user" = 0 ] && userdel chatvault 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if dpkg -s chatvault >/dev/null 2>&1; then
  log "chatvault is installed already (an earlier run?): purging it first; its data stays"
  dpkg --purge chatvault >/dev/null
fi

log "building the package from the $PROFILE binary"
DEB=$(bash scripts/build-deb.sh --profile "$PROFILE" --no-build --fast | tail -1)
DEB=${DEB##* }
[ -f "$DEB" ] || fail "no package at '$DEB'"
log "installing $DEB"
dpkg -i "$DEB" >/dev/null

log "checking what the package installed"
for path in /usr/bin/chatvault "$UNIT" /etc/chatvault/chatvault.toml \
    /usr/share/man/man1/chatvault.1.gz /usr/share/man/man1/chatvault-serve.1.gz \
    /usr/share/man/man1/chatvault-backup.1.gz \
    /usr/share/bash-completion/completions/chatvault \
    /usr/share/zsh/vendor-completions/_chatvault \
    /usr/share/fish/vendor_completions.d/chatvault.fish; do
  [ -e "$path" ] || fail "$path is missing"
done
getent passwd chatvault | grep -q ':/var/lib/chatvault:/usr/sbin/nologin$' \
  || fail "the chatvault user is not a system user homed in /var/lib/chatvault"
[ "$(stat -c '%U:%G %a' /var/lib/chatvault)" = "chatvault:chatvault 750" ] \
  || fail "/var/lib/chatvault: $(stat -c '%U:%G %a' /var/lib/chatvault)"
[ "$(stat -c '%U:%G %a' /etc/chatvault/chatvault.toml)" = "root:chatvault 640" ] \
  || fail "/etc/chatvault/chatvault.toml: $(stat -c '%U:%G %a' /etc/chatvault/chatvault.toml)"
dpkg-query -W -f='${Conffiles}\n' chatvault | grep -q /etc/chatvault/chatvault.toml \
  || fail "the configuration is not a conffile (an upgrade would overwrite local edits)"
zcat /usr/share/man/man1/chatvault-backup.1.gz | grep -q 'manifest' \
  || fail "the backup man page does not describe the command"
bash -c 'source /usr/share/bash-completion/completions/chatvault && complete -p chatvault' \
  >/dev/null || fail "the bash completion does not register"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$UNIT" || fail "systemd-analyze verify $UNIT"
  exposure=$(systemd-analyze security --offline=true "$UNIT" 2>/dev/null | tail -1)
  log "systemd's exposure rating: ${exposure##*: }"
fi

EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ -n "$EXEC" ] || fail "no ExecStart in $UNIT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "running the unit's ExecStart as chatvault: $EXEC (port $PORT)"
# The unit's working directory and environment: / and nothing but the port.
(cd / && exec runuser -u chatvault -- env -i PATH=/usr/bin:/bin CHATVAULT_LISTEN="127.0.0.1:$PORT" \
  $EXEC >"$WORK/stdout" 2>"$WORK/stderr") &
SERVER=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/stderr" >&2; fail "the service exited"; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "/healthz does not answer"
KEY=$(grep -o 'cv_[A-Za-z0-9_]*' "$WORK/stdout" | head -1)
[ -n "$KEY" ] || { cat "$WORK/stdout" >&2; fail "the first start printed no admin key"; }
curl -fsS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/stats" | grep -q '"chats"' \
  || fail "the API does not answer the first key"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/console/")" = 200 ] \
  || fail "the console does not answer"
grep -q '"level"' "$WORK/stderr" || fail "the service's logs are not JSON, as its configuration asks"
[ -z "$(find /var/lib/chatvault -not -user chatvault)" ] \
  || fail "files in /var/lib/chatvault not owned by chatvault: $(find /var/lib/chatvault -not -user chatvault)"
[ -f /var/lib/chatvault/catalog.db ] || fail "no catalog in /var/lib/chatvault"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""

log "purging the package"
dpkg --purge chatvault >/dev/null
dpkg -s chatvault >/dev/null 2>&1 && fail "the package is still installed"
for path in /usr/bin/chatvault "$UNIT" /etc/chatvault /usr/share/man/man1/chatvault.1.gz; do
  [ -e "$path" ] && fail "$path is left after purge"
done
[ -f /var/lib/chatvault/catalog.db ] || fail "the purge deleted the data (it must keep it)"
log "OK: installed, served as chatvault from the unit's ExecStart, purged cleanly"
