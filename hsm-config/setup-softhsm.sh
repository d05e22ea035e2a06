#!/usr/bin/env bash
# Creates a SoftHSM2 configuration and token directory in DIR, and optionally
# initialises an empty token, for operators who want a token without
# `notary init` (which does all of this and also generates the keys).
#
# Usage: hsm-config/setup-softhsm.sh DIR [--init-token LABEL]
#
#   DIR/softhsm2.conf    from hsm-config/softhsm2.conf.template
#   DIR/tokens/          the token directory (mode 0700)
#   with --init-token:   a token labelled LABEL, with random SO and user PINs
#                        in DIR/hsm/so-pin and DIR/hsm/user-pin (mode 0600)
#
# Prints the `export SOFTHSM2_CONF=...` line to use. Development only.
set -euo pipefail

usage() {
  echo "usage: $0 DIR [--init-token LABEL]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
dir=$1
shift
label=""
if [ $# -gt 0 ]; then
  [ "$1" = "--init-token" ] && [ $# -eq 2 ] && [ -n "$2" ] || usage
  label=$2
fi

here=$(cd "$(dirname "$0")" && pwd)
template="$here/softhsm2.conf.template"
[ -f "$template" ] || { echo "missing $template" >&2; exit 1; }

umask 077
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
tokens="$dir/tokens"
if [ -e "$conf" ]; then
  echo "$conf already exists; refusing to overwrite it" >&2
  exit 1
fi
mkdir -p "$tokens"
chmod 700 "$tokens"

# Escape the characters sed treats specially in a replacement (\ & and |).
escaped=$(printf '%s' "$tokens" | sed -e 's/[\\&|]/\\&/g')
sed -e "/^directories\.tokendir/s|@TOKENDIR@|$escaped|" "$template" >"$conf"

if [ -n "$label" ]; then
  command -v softhsm2-util >/dev/null || {
    echo "softhsm2-util not found: apt-get install softhsm2" >&2
    exit 1
  }
  mkdir -p "$dir/hsm"
  chmod 700 "$dir/hsm"
  # 18 random bytes, base64url: 24 characters.
  random_pin() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }
  random_pin >"$dir/hsm/so-pin"
  random_pin >"$dir/hsm/user-pin"
  # The PINs appear briefly on softhsm2-util's command line: development only.
  SOFTHSM2_CONF="$conf" softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$dir/hsm/so-pin")" --pin "$(cat "$dir/hsm/user-pin")" >/dev/null
  echo "initialised token \"$label\"; PINs in $dir/hsm/ (mode 0600)" >&2
  echo "the token holds no keys yet: see hsm-config/README.md" >&2
fi

echo "export SOFTHSM2_CONF=$(printf '%q' "$conf")"
