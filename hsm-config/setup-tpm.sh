#!/usr/bin/env bash
# setup-tpm.sh: a TPM 2.0 PKCS#11 token for notary, on a software TPM.
#
#   swtpm (TCP, 127.0.0.1) -> tpm2-abrmd on a private D-Bus session bus
#   -> libtpm2_pkcs11.so (store: DIR/store) -> token "notary" with the keys
#   notary adopts (`notary init --token`), all made inside the TPM by
#   tpm2_ptool: three P-256 keys (access tokens, credentials, audit
#   checkpoints), two HMAC-SHA256 keys (keyed hash, claims MAC) and an
#   AES-256 key (claims). The TPM has no Ed25519 and no AES-GCM; see
#   docs/custody.md ("Key ceremony") for a real TPM (/dev/tpmrm0).
#
# Usage (as root on Debian 12):
#   setup-tpm.sh [start] [DIR]   install what is missing, start, provision; writes DIR/env
#   setup-tpm.sh stop [DIR]      kill the processes this script started (pid files in DIR)
#   setup-tpm.sh status [DIR]    show pids and the token's objects
#   setup-tpm.sh purge [DIR]     stop, then delete DIR
#   DIR defaults to /tmp/notary-tpm.  Then:  . DIR/env
#
# Environment knobs (all optional):
#   NOTARY_TPM_USER_PIN   user PIN (default 1234)
#   NOTARY_TPM_SO_PIN     SO PIN   (default 12345678)
#   NOTARY_TPM_LABEL      token label (default notary)
#   NOTARY_TPM_PORT       swtpm server port; control port is PORT+1 (default 2321)
#   NOTARY_TPM_DA         off (default): dictionary-attack protection disabled
#                         (recovery time 0) so wrong-PIN tests cannot lock the TPM;
#                         swtpm: keep swtpm's defaults (3 tries, 1000 s lockout)
#   NOTARY_TPM_NO_INSTALL=1  skip the apt part
#   NOTARY_TPM_TEST_TOOLS=1  also install opensc (pkcs11-tool) and python3-pykcs11
#
# Idempotent: a second `start` on a running, provisioned DIR only checks and rewrites
# DIR/env. If the TPM state and the store no longer match (one of them deleted), both
# are wiped and re-provisioned (the store is bound to the TPM's persistent primary key).
set -euo pipefail

CMD=start
case "${1:-}" in
  start|stop|status|purge) CMD=$1; shift ;;
esac
DIR=${1:-/tmp/notary-tpm}
USER_PIN=${NOTARY_TPM_USER_PIN:-1234}
SO_PIN=${NOTARY_TPM_SO_PIN:-12345678}
LABEL=${NOTARY_TPM_LABEL:-notary}
PORT=${NOTARY_TPM_PORT:-2321}
CTRL_PORT=$((PORT + 1))
DA=${NOTARY_TPM_DA:-off}

# label:tpm2_ptool-algorithm
KEYS=(
  "notary-signing-1:ecc256"
  "notary-credential-1:ecc256"
  "notary-audit-1:ecc256"
  "notary-hmac-1:hmac:sha256"
  "notary-claims-1:aes256"
  "notary-claims-mac-1:hmac:sha256"
)

log() { printf '[setup-tpm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- process helpers
# pid_alive FILE EXPECTED_EXE_BASENAME: true if the pid in FILE runs that program
pid_alive() {
  local f=$1 exe=$2 pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  local argv0
  IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" || true
  [[ $argv0 == *"$exe" ]]
}

# running PID: exists and is not a zombie (a container's PID 1 may never reap)
running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

stop_one() {
  local name=$1 exe=$2 f="$DIR/$1.pid" pid i
  if pid_alive "$f" "$exe"; then
    pid=$(<"$f")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

do_stop() {
  stop_one abrmd tpm2-abrmd
  stop_one dbus dbus-daemon
  stop_one swtpm swtpm
  rm -f "$DIR/bus"
}

if [[ $CMD == stop ]]; then do_stop; exit 0; fi
if [[ $CMD == purge ]]; then do_stop; rm -rf "$DIR"; log "removed $DIR"; exit 0; fi

# ---------------------------------------------------------------- packages
PKGS=(swtpm tpm2-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd
      libtss2-tcti-tabrmd0 libtss2-tcti-swtpm0 dbus-daemon)
if [[ ${NOTARY_TPM_TEST_TOOLS:-0} == 1 ]]; then PKGS+=(opensc python3-pykcs11); fi

install_missing() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "need root to install: ${missing[*]}"
  log "installing ${missing[*]}: a software TPM, its resource manager and its PKCS#11 module"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null; }
}

if [[ $CMD == start && ${NOTARY_TPM_NO_INSTALL:-0} != 1 ]]; then install_missing; fi

MODULE=$(dpkg -L libtpm2-pkcs11-1 2>/dev/null | grep -m1 '/pkcs11/libtpm2_pkcs11\.so$' || true)
[[ -n $MODULE && -e $MODULE ]] || MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so

SWTPM_TCTI="swtpm:host=127.0.0.1,port=$PORT"
TABRMD_TCTI="tabrmd:bus_type=session"
BUS_ADDR="unix:path=$DIR/bus"
export DBUS_SESSION_BUS_ADDRESS=$BUS_ADDR
export TPM2TOOLS_TCTI=$TABRMD_TCTI        # tpm2_* tools and tpm2_ptool (it shells out to them)
export TPM2_PKCS11_TCTI=$TABRMD_TCTI
export TPM2_PKCS11_STORE=$DIR/store
export TSS2_LOG=${TSS2_LOG:-all+none}     # silence libtss2 ESYS/TCTI chatter on stderr

if [[ $CMD == status ]]; then
  for n in swtpm:swtpm dbus:dbus-daemon abrmd:tpm2-abrmd; do
    f=${n%%:*}; e=${n#*:}
    if pid_alive "$DIR/$f.pid" "$e"; then echo "$f: running (pid $(<"$DIR/$f.pid"))"; else echo "$f: not running"; fi
  done
  tpm2_ptool listobjects --label "$LABEL" 2>/dev/null | grep CKA_LABEL || echo "token $LABEL: not readable"
  exit 0
fi

# ---------------------------------------------------------------- start
T0=$(date +%s.%N)
mkdir -p "$DIR/tpmstate" "$DIR/store"
chmod 755 "$DIR"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for DESCRIPTION COMMAND...
  local what=$1 i; shift
  for i in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out waiting for $what"
}

# 1. swtpm
if pid_alive "$DIR/swtpm.pid" swtpm; then
  log "swtpm already running (pid $(<"$DIR/swtpm.pid"))"
else
  if port_open "$PORT" || port_open "$CTRL_PORT"; then
    die "port $PORT or $CTRL_PORT is in use; set NOTARY_TPM_PORT"
  fi
  # A TPM state without a store (or the reverse) cannot be used: start over.
  if [[ ! -s $DIR/store/tpm2_pkcs11.sqlite3 || ! -e $DIR/tpmstate/tpm2-00.permall ]]; then
    rm -rf "$DIR/tpmstate" "$DIR/store"
    mkdir -p "$DIR/tpmstate" "$DIR/store"
  fi
  swtpm socket --tpm2 \
    --tpmstate dir="$DIR/tpmstate" \
    --server type=tcp,port="$PORT",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port="$CTRL_PORT",bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear \
    --pid file="$DIR/swtpm.pid" \
    --log file="$DIR/swtpm.log" \
    -d
  wait_for "swtpm on port $PORT" tpm2_getcap -T "$SWTPM_TCTI" properties-fixed
  log "swtpm started (pid $(<"$DIR/swtpm.pid"), port $PORT, ctrl $CTRL_PORT)"
fi

# 2. private D-Bus session bus
if pid_alive "$DIR/dbus.pid" dbus-daemon; then
  log "dbus-daemon already running (pid $(<"$DIR/dbus.pid"))"
else
  rm -f "$DIR/bus"
  dbus-daemon --session --address="$BUS_ADDR" --fork --nopidfile --print-pid=1 >"$DIR/dbus.pid"
  wait_for "dbus socket" test -S "$DIR/bus"
  log "dbus-daemon started (pid $(<"$DIR/dbus.pid"), $BUS_ADDR)"
fi

# 3. tpm2-abrmd on that bus, talking to swtpm
if pid_alive "$DIR/abrmd.pid" tpm2-abrmd; then
  log "tpm2-abrmd already running (pid $(<"$DIR/abrmd.pid"))"
else
  ABRMD_ARGS=(--session --tcti="$SWTPM_TCTI" --flush-all)
  [[ $(id -u) == 0 ]] && ABRMD_ARGS+=(--allow-root)
  setsid tpm2-abrmd "${ABRMD_ARGS[@]}" </dev/null >"$DIR/abrmd.log" 2>&1 &
  echo $! >"$DIR/abrmd.pid"
  wait_for "tpm2-abrmd on the session bus" tpm2_getcap -T "$TABRMD_TCTI" properties-fixed
  log "tpm2-abrmd started (pid $(<"$DIR/abrmd.pid"))"
fi

# 4. dictionary-attack settings (each wrong PIN is a TPM auth failure; swtpm locks
#    the whole TPM, i.e. every key, after 3 of them for 1000 s)
if [[ $DA == off ]]; then
  tpm2_dictionarylockout --clear-lockout >/dev/null
  tpm2_dictionarylockout --setup-parameters --max-tries=3 --recovery-time=0 --lockout-recovery-time=0 >/dev/null
fi

# 5. provision the store: primary object, token, keys (only what is missing)
ptool() { tpm2_ptool "$@" --path "$DIR/store"; }
# (capture first: `cmd | grep -q` under pipefail fails at random when grep exits early)
primaries=$(ptool listprimaries 2>/dev/null || true)
if ! grep -q 'id: 1$' <<<"$primaries"; then
  ptool init >/dev/null
  log "created primary object (persistent handle 0x81000001)"
fi
tokens=$(ptool listtokens --pid 1 2>/dev/null || true)
if ! grep -q "label: $LABEL\$" <<<"$tokens"; then
  ptool addtoken --pid=1 --label="$LABEL" --userpin="$USER_PIN" --sopin="$SO_PIN" >/dev/null
  log "created token $LABEL"
fi
objects=$(ptool listobjects --label "$LABEL" 2>/dev/null || true)
for spec in "${KEYS[@]}"; do
  klabel=${spec%%:*}
  alg=${spec#*:}
  if grep -q "CKA_LABEL: $klabel\$" <<<"$objects"; then
    continue
  fi
  # --id is stored as the bytes of the given string: CKA_ID == the label's bytes
  ptool addkey --label="$LABEL" --key-label="$klabel" --id="$klabel" \
    --userpin="$USER_PIN" --algorithm="$alg" >/dev/null
  log "added key $klabel ($alg)"
done

# 6. the user PIN as notary reads it (a file only its owner reads), and the
#    client environment
(umask 077 && printf '%s\n' "$USER_PIN" >"$DIR/user-pin")
cat >"$DIR/env" <<EOF
# source me: . $DIR/env
export PKCS11_MODULE=$MODULE
export NOTARY_PKCS11_MODULE=$MODULE
export NOTARY_TOKEN_LABEL=$LABEL
export NOTARY_USER_PIN=$USER_PIN
export TPM2_PKCS11_STORE=$DIR/store
export TPM2_PKCS11_TCTI=$TABRMD_TCTI
export TPM2TOOLS_TCTI=$TABRMD_TCTI
export DBUS_SESSION_BUS_ADDRESS=$BUS_ADDR
export TPM2_PKCS11_LOG_LEVEL=0
export TSS2_LOG=all+none
EOF
T1=$(date +%s.%N)
log "ready in $(awk "BEGIN{printf \"%.2f\", $T1-$T0}") s; environment in $DIR/env (module $MODULE)"
