#!/usr/bin/env bash
# The cost of the policy engine, measured two ways in one run on one machine:
#
# 1. Evaluation alone (criterion, crates/policy/benches/evaluate.rs): the 50-rule policy of
#    crates/policy/benches/fifty-rules.toml, every condition kind and all built-in lists, on a
#    4 KB and a 1 MB message, parse included.
# 2. End to end through Postern (postern bench smtp → Postern → smtp-sink), every message
#    encrypted and signed, once with the default policy and once with the 50-rule policy (its
#    last rule changed from pass to encrypt, so both runs do the same crypto): MESSAGES messages
#    of 4 KB, then BIG messages of 1 MB, over CONNECTIONS connections; ROUNDS rounds, the two
#    gateways alternating, each from an empty data directory.
#
# Needs: root or smtp-sink (Debian package postfix) and a release build.
# Usage: scripts/bench-policy.sh [MESSAGES] [BIG] [CONNECTIONS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${1:-3000}
BIG=${2:-100}
CONNECTIONS=${3:-20}
ROUNDS=${4:-3}
WORK=$(mktemp -d /tmp/postern-policy-bench.XXXXXX)
SINK_PORT=22025 POSTERN_PORT=22026 WEB_PORT=22080
BIN=target/release/postern

command -v smtp-sink >/dev/null || { apt-get update -qq && apt-get install -y -qq postfix >/dev/null; }
cargo build --release -p postern >/dev/null 2>&1

echo "== evaluation alone (criterion)"
cargo bench -p policy --bench evaluate -- --warm-up-time 2 --measurement-time 6 2>/dev/null \
  | grep -E '^(evaluate|parse|detect)|time:' \
  | awk '/time:/ { if ($0 ~ /^(evaluate|parse|detect)/) print; else print name $0; next } { name = $0 }' \
  | sed 's/  */ /g'

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }

start_sink() {
  [ -n "${SINK_PID:-}" ] && { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; }
  : > "$WORK/sink.out"
  smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 > "$WORK/sink.out" 2>&1 &
  SINK_PID=$!
  pids+=("$SINK_PID")
  sleep 0.3
}

wait_sink() {
  local limit=$(( $(date +%s) + 900 ))
  while :; do
    [ "$(date +%s)" -lt "$limit" ] || { echo "smtp-sink never counted $1 messages" >&2; exit 1; }
    n=$(tr '\r' '\n' < "$WORK/sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    [ "${n:-0}" -ge "$1" ] && { now; return; }
    sleep 0.01
  done
}

load() { # $1 = messages, $2 = size: prints seconds per message, end to end
  local t0 t1
  start_sink
  t0=$(now)
  "$BIN" bench smtp --to "127.0.0.1:$POSTERN_PORT" --connections "$CONNECTIONS" --messages "$1" \
    --size "$2" --from alice@corp.example --recipients 100 > /dev/null
  t1=$(wait_sink "$1")
  echo "$1 messages of $2 bytes: $(echo "($t1 - $t0) / $1 * 1000" | bc -l | cut -c1-6) ms per message"
}

run_postern() { # $1 = label, $2 = policy file or empty
  local dir="$WORK/$1-$ROUND"
  mkdir -p "$dir"
  cat > "$dir/postern.toml" <<TOML
data_dir = "$dir/data"
[web]
listen = "127.0.0.1:$WEB_PORT"
[smtp]
listen = "127.0.0.1:$POSTERN_PORT"
max_message_size = 150000000
internal_domains = ["corp.example"]
[delivery]
internal = "127.0.0.1:$SINK_PORT"
external = "127.0.0.1:$SINK_PORT"
starttls = "off"
TOML
  RUST_LOG=warn "$BIN" serve --config "$dir/postern.toml" 2> "$dir/postern.log" &
  local pid=$!
  pids+=("$pid")
  sleep 8 # the master key is made and the first prefetch is done
  # Imported into the running gateway (the queue database exists once it has started).
  if [ -n "$2" ]; then "$BIN" policy import "$2" --config "$dir/postern.toml" 2>&1 | tail -1; fi
  echo "== end to end, round $ROUND, $1"
  load "$MESSAGES" 4096
  load "$BIG" 1048576
  echo "encrypted: $(curl -s "http://127.0.0.1:$WEB_PORT/metrics" | sed -n 's/^postern_encrypted_total //p')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

sed 's/name = "rest"/name = "rest (encrypted, as the default policy does)"/; s/actions = \[{ do = "pass" }\]/actions = [{ do = "encrypt" }]/' \
  crates/policy/benches/fifty-rules.toml > "$WORK/fifty-encrypt.toml"
"$BIN" policy check "$WORK/fifty-encrypt.toml"
for ROUND in $(seq 1 "$ROUNDS"); do
  run_postern "default policy" ""
  run_postern "50-rule policy" "$WORK/fifty-encrypt.toml"
done
