#!/usr/bin/env bash
# End-to-end SMTP throughput of Postern against Debian's Postfix, in one run on one machine.
#
# The same load (postern bench smtp: MESSAGES messages of SIZE bytes over CONNECTIONS
# connections, from alice@corp.example to RECIPIENTS distinct external recipients) goes through
# each gateway to Postfix's smtp-sink. Postern encrypts and signs every message (its key server
# runs in the same process); Postfix relays them in plain text. The rate counted is end to end:
# from the first byte sent to the last message counted by smtp-sink. Then one 100 MB message goes
# through Postern, and the peak resident memory of the gateway process while it does is read
# from /proc.
#
# Needs: root (Postfix), Debian packages postfix (for postfix, smtp-sink) and a release build.
# Usage: scripts/bench-smtp.sh [MESSAGES] [SIZE] [CONNECTIONS] [RECIPIENTS]
#        POSTERN_BIN=/path/to/postern scripts/bench-smtp.sh ...   (a given build, not built here)
#        POLICY=scripts/bench-pass-through.toml scripts/bench-smtp.sh ...   (no encryption)
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${1:-5000}
SIZE=${2:-4096}
CONNECTIONS=${3:-20}
RECIPIENTS=${4:-100}
WORK=$(mktemp -d /tmp/postern-bench.XXXXXX)
chmod 755 "$WORK" # Postfix daemons run as the postfix user and must reach their directories
SINK_PORT=21025 POSTERN_PORT=21026 POSTFIX_PORT=21027 WEB_PORT=21080 BYPASS_PORT=21028
# POSTERN_BIN=PATH runs another build (an older one, to compare in one sitting) instead.
BIN=${POSTERN_BIN:-${CARGO_TARGET_DIR:-target}/release/postern}

command -v smtp-sink >/dev/null || { apt-get update -qq && apt-get install -y -qq postfix >/dev/null; }
[ -n "${POSTERN_BIN:-}" ] || cargo build --release -p postern >/dev/null 2>&1

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }

# Starts smtp-sink afresh; its counter output goes to $WORK/sink.out.
start_sink() {
  [ -n "${SINK_PID:-}" ] && { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; }
  : > "$WORK/sink.out"
  smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 > "$WORK/sink.out" 2>&1 &
  SINK_PID=$!
  pids+=("$SINK_PID")
  sleep 0.3
}

# Waits (up to 10 minutes) until smtp-sink has counted $1 messages; prints the time it happened.
wait_sink() {
  local limit=$(( $(date +%s) + 600 ))
  while :; do
    [ "$(date +%s)" -lt "$limit" ] || { echo "smtp-sink never counted $1 messages" >&2; exit 1; }
    n=$(tr '\r' '\n' < "$WORK/sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    [ "${n:-0}" -ge "$1" ] && { now; return; }
    sleep 0.01
  done
}

run_load() { # $1 = port
  local t0 t1 out
  t0=$(now)
  out=$("$BIN" bench smtp --to "127.0.0.1:$1" --connections "$CONNECTIONS" --messages "$MESSAGES" --size "$SIZE" --from alice@corp.example --recipients "$RECIPIENTS")
  t1=$(wait_sink "$MESSAGES")
  echo "$out end_to_end_seconds=$(echo "$t1 - $t0" | bc -l) end_to_end_rate_per_s=$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)"
}

# --- Postern -----------------------------------------------------------------------------------
start_sink
cat > "$WORK/postern.toml" <<TOML
data_dir = "$WORK/postern-data"
[web]
listen = "127.0.0.1:$WEB_PORT"
[smtp]
listen = "127.0.0.1:$POSTERN_PORT"
bypass_listen = "127.0.0.1:$BYPASS_PORT"
max_message_size = 150000000
internal_domains = ["corp.example"]
[delivery]
internal = "127.0.0.1:$SINK_PORT"
external = "127.0.0.1:$SINK_PORT"
starttls = "off"
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/postern.toml" 2> "$WORK/postern.log" &
POSTERN_PID=$!
pids+=("$POSTERN_PID")
sleep 8 # the master key is made and the first prefetch is done
# POLICY=FILE imports another policy (scripts/bench-pass-through.toml: no encryption).
if [ -n "${POLICY:-}" ]; then "$BIN" policy import "$POLICY" --config "$WORK/postern.toml" 2>&1 | tail -1; fi
echo "postern: $(run_load $POSTERN_PORT)"
echo "postern: $(curl -s "http://127.0.0.1:$WEB_PORT/metrics" | grep -E '^postern_(encrypted_total|errored_total)' | tr '\n' ' ')"

# --- Postfix as a plain relay to the same sink ---------------------------------------------------
start_sink
PF="$WORK/postfix"
mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
cat > "$PF/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.postfix.local
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
alias_maps =
alias_database =
local_transport = error:no local delivery
maillog_file = $PF/maillog
maillog_file_prefixes = /tmp
default_process_limit = 100
master_service_disable =
CF
cat > "$PF/etc/master.cf" <<'MCF'
POSTFIX_LISTEN inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
MCF
sed -i "s/^POSTFIX_LISTEN/127.0.0.1:$POSTFIX_PORT/" "$PF/etc/master.cf"
chown postfix "$PF/data"
# Postfix accepts a non-default configuration directory only when the default one names it.
postconf -e "alternate_config_directories = $PF/etc"
postfix -c "$PF/etc" check >/dev/null 2>&1 || true
postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
postfix -c "$PF/etc" start || { echo "postfix did not start; see $PF/maillog" >&2; exit 1; }
sleep 2
echo "postfix: $(run_load $POSTFIX_PORT)"
postfix -c "$PF/etc" stop >/dev/null 2>&1 || true

# --- One 100 MB message through Postern, peak memory ----------------------------------------------
# The high-water mark so far (peak_before) is mostly the start's: the master key vault's
# Argon2id derivation takes 64 MiB for a moment. It is reported, then reset (clear_refs 5), so
# that the peak measured is the message's, over what the process holds after the load
# (rss_before_message).
start_sink
START_PEAK=$(awk '/VmHWM/ {print $2}' /proc/$POSTERN_PID/status)
echo 5 > /proc/$POSTERN_PID/clear_refs
BEFORE_MESSAGE=$(awk '/VmRSS/ {print $2}' /proc/$POSTERN_PID/status)
"$BIN" bench smtp --to "127.0.0.1:$POSTERN_PORT" --connections 1 --messages 1 --size 100000000 --from alice@corp.example
wait_sink 1 > /dev/null
echo "postern 100MB message: peak_rss_kib=$(awk '/VmHWM/ {print $2}' /proc/$POSTERN_PID/status) rss_before_message_kib=$BEFORE_MESSAGE peak_before_rss_kib=$START_PEAK"
