#!/usr/bin/env bash
# Runs credentials.mjs (or the script named as the first argument, e.g.
# interop.mjs) against the stand-in server (mock/notary-mock.mjs), to check
# the harness itself without building notary. Not a test of notary.
# Usage: [MOCK_FAULT=...] mock/run.sh [script.mjs]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $mock 2>/dev/null || true; wait $mock 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node mock/notary-mock.mjs --port "$port" --cert "$work/cert.pem" --key "$work/key.pem" >"$work/mock.out" 2>"$work/mock.err" &
mock=$!
for _ in $(seq 100); do grep -q '^ready' "$work/mock.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/mock.out" || { cat "$work/mock.err" >&2; exit 1; }
status=0
NOTARY_URL=https://localhost:$port NOTARY_ADMIN_KEY=mock-admin-key NOTARY_CA=$work/cert.pem \
  node "${1:-credentials.mjs}" || status=$?
if [ -s "$work/mock.err" ]; then echo "--- mock stderr" >&2; cat "$work/mock.err" >&2; fi
exit $status
