#!/usr/bin/env bash
# Autobahn|Testsuite conformance: the echo backend alone, then the gateway in front of the
# same backend. The gateway must add no failing case.
#
#   bash bench/autobahn.sh [CASES]      # CASES: default (1-7, 10) | compression | "1.*,5.*" ...
#   AUTOBAHN_BACKEND=websockets bash bench/autobahn.sh compression   # deflate end to end
#   AUTOBAHN_TIER=drop bash bench/autobahn.sh                         # through a counted drop tier
#
# AUTOBAHN_TIER: `unlimited` (default) subscribes with a tier that counts nothing; `drop`
# subscribes with `Counted: {messages_per_minute: 100000000, on_limit: drop,
# backend_on_limit: drop}`: every message in both directions is counted, none is actually
# dropped, and because both directions can drop, the gateway makes permessage-deflate
# messages self-contained both ways (client_no_context_takeover in its answer to the client,
# server_no_context_takeover asked of the backend).
#
# Prints the two summary lines (backend alone, through the gateway); reports in /tmp/wsgw-ab-*.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AB="${AUTOBAHN_DIR:-$HERE/../shared/autobahn}"
CASES="${1:-default}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"   # this checkout, installed or not
BACKEND_PORT="${BACKEND_PORT:-9311}"
GATEWAY_PORT="${GATEWAY_PORT:-9312}"
ADMIN_PORT="${ADMIN_PORT:-9313}"
case "${AUTOBAHN_TIER:-unlimited}" in
  unlimited) TIER=Unlimited; TIER_YAML="{}" ;;
  drop) TIER=Counted; TIER_YAML="{messages_per_minute: 100000000, on_limit: drop, backend_on_limit: drop}" ;;
  *) echo "AUTOBAHN_TIER must be unlimited or drop" >&2; exit 2 ;;
esac

bash "$AB/setup.sh" >/dev/null 2>&1 || bash "$AB/setup.sh"
WORK="$(mktemp -d /tmp/wsgw-ab-XXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

# The backend: wsgw's own echo (picows), or the suite's websockets reference echo, which
# negotiates permessage-deflate (for the compression cases 12.* and 13.*).
case "${AUTOBAHN_BACKEND:-wsgw}" in
  wsgw) "$PY" -m wsgw echo --listen "127.0.0.1:$BACKEND_PORT" >"$WORK/echo.log" 2>&1 & ;;
  websockets) "$PY" "$AB/ref_echo_server.py" websockets --port "$BACKEND_PORT" >"$WORK/echo.log" 2>&1 & ;;
  *) echo "AUTOBAHN_BACKEND must be wsgw or websockets" >&2; exit 2 ;;
esac
PIDS+=($!)
cat > "$WORK/wsgw.yaml" <<YAML
gateway:
  listen: "127.0.0.1:$GATEWAY_PORT"
  admin_listen: "127.0.0.1:$ADMIN_PORT"
  max_message_bytes: 67108864     # 9.* and 12.* send up to 16 MiB
tiers: {$TIER: $TIER_YAML}
apis:
  - name: Echo
    context: /echo
    version: "1.0"
    endpoints: {production: "ws://127.0.0.1:$BACKEND_PORT"}
    tiers: [$TIER]
YAML
cd "$WORK"
"$PY" -m wsgw keys init >/dev/null
"$PY" -m wsgw app create Autobahn >/dev/null
"$PY" -m wsgw keys generate Autobahn --key-type production >/dev/null 2>&1
"$PY" -m wsgw subscribe Autobahn Echo:1.0 --tier "$TIER" >/dev/null
TOKEN="$("$PY" -m wsgw token Autobahn 2>/dev/null)"
"$PY" -m wsgw serve --log-level warning >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT"; wait_port "$GATEWAY_PORT"

set +e
echo -n "backend alone:    "
bash "$AB/run_fuzzingclient.sh" 127.0.0.1 "$BACKEND_PORT" "$WORK/direct" "$CASES" 2>"$WORK/direct.err"
echo -n "through gateway:  "
AUTOBAHN_URL="ws://127.0.0.1:$GATEWAY_PORT/echo/1.0?access_token=$TOKEN" \
  bash "$AB/run_fuzzingclient.sh" 127.0.0.1 "$GATEWAY_PORT" "$WORK/gateway" "$CASES" 2>"$WORK/gateway.err"
set -e
"$PY" - "$WORK/direct/index.json" "$WORK/gateway/index.json" <<'PYEOF'
import json, sys
def load(p):
    idx = json.load(open(p))
    return {cid: r["behavior"] for agent in idx.values() for cid, r in agent.items()}
direct, gateway = load(sys.argv[1]), load(sys.argv[2])
worse = sorted(c for c in gateway if gateway[c] == "FAILED" and direct.get(c) != "FAILED")
print("cases failing through the gateway but not alone:", ", ".join(worse) or "none")
sys.exit(1 if worse else 0)
PYEOF
