# Sourced by the perf scripts: the broker under test, pinned to CPU 0 (one shard), on loopback.
#   start_broker BIN PORT DATA_DIR LOG [serve args...]   starts it, sets BROKER_PID, and returns
#                                                         once PORT accepts connections (or 10 s on)
#   stop_broker                                           stops it and waits for it to exit
#   cpu_ticks PID                                         CPU time of all its threads, clock ticks
#   release_binaries                                      BROKER and BENCH default to target/release
start_broker() {
  local bin=$1 port=$2 data=$3 log=$4
  shift 4
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --cores 0-0 "$@" \
    >"$log" 2>&1 &
  BROKER_PID=$!
  local _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
}

stop_broker() {
  kill "$BROKER_PID"
  wait "$BROKER_PID"
}

cpu_ticks() {
  local f
  read -r -a f <"/proc/$1/stat" && echo $((f[13] + f[14]))
}

# Sets BROKER and BENCH to this checkout's release build (CARGO_TARGET_DIR honoured) unless the
# environment names other binaries. Needs ROOT, the repository's root.
release_binaries() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}/release
  BROKER=${BROKER:-$target/odradek}
  BENCH=${BENCH:-$target/odradek-bench}
}
