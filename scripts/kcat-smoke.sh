#!/usr/bin/env bash
# Smoke test with kcat (Debian's kcat links librdkafka 2.0.2) against a real `odradek serve`.
#
# Starts the broker ($ODRADEK_BIN, default target/release/odradek) on a free loopback port with a
# temporary data dir, lists metadata (kcat -L), produces keyed lines (-K:), consumes them back
# from the beginning (-C -e -o beginning) and compares, then stops the broker by PID (SIGTERM,
# exit code 0 expected). Every wait is bounded. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${ODRADEK_BIN:-${CARGO_TARGET_DIR:-target}/release/odradek}
RECORDS=${KCAT_SMOKE_RECORDS:-2000}

command -v kcat >/dev/null || { echo "kcat-smoke: kcat not installed (apt-get install kcat)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "kcat-smoke: broker binary $BIN missing (cargo build --release)" >&2; exit 1; }

tmp=$(mktemp -d -t odradek-kcat-XXXXXX)
pid=
ok=0

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}

cleanup() {
  local code=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$ok" != 1 ]; then
    echo "kcat-smoke: FAILED; broker log tail ($tmp/broker.log):" >&2
    tail -n 60 "$tmp/broker.log" >&2 2>/dev/null || true
  else
    rm -rf "$tmp"
  fi
  exit "$code"
}
trap cleanup EXIT

fail() { echo "kcat-smoke: $*" >&2; exit 1; }

port=$(free_port)
bootstrap=127.0.0.1:$port
echo "kcat-smoke: $(kcat -V 2>&1 | head -n 1 || true)"
echo "kcat-smoke: starting $BIN on $bootstrap"
"$BIN" serve --listen "$bootstrap" --data-dir "$tmp/data" \
  --override num.partitions=1 --override auto.create.topics.enable=true \
  </dev/null >"$tmp/broker.log" 2>&1 &
pid=$!

# Wait (30 s max) until the listener accepts TCP.
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || fail "broker exited during start-up"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "broker did not accept TCP within 30 s"

# 1. Metadata.
timeout 30 kcat -b "$bootstrap" -L -m 15 >"$tmp/metadata.txt" 2>&1 || { cat "$tmp/metadata.txt" >&2; fail "kcat -L failed"; }
grep -q "broker" "$tmp/metadata.txt" || { cat "$tmp/metadata.txt" >&2; fail "kcat -L lists no broker"; }
echo "kcat-smoke: kcat -L ok"

# 2. Produce keyed lines (key before the first ':'), acks=all.
topic=kcat-smoke
for i in $(seq 0 $((RECORDS - 1))); do
  echo "key-$((i % 17)):value $i with spaces: and colons"
done >"$tmp/in.txt"
timeout 60 kcat -b "$bootstrap" -P -t "$topic" -K: -X acks=all -X message.timeout.ms=30000 \
  <"$tmp/in.txt" >"$tmp/produce.txt" 2>&1 || { cat "$tmp/produce.txt" >&2; fail "kcat -P failed"; }
# Delivery failures show up in the comparison below; print kcat's own complaints anyway.
if [ -s "$tmp/produce.txt" ]; then sed "s/^/kcat -P: /" "$tmp/produce.txt" >&2; fi
echo "kcat-smoke: produced $RECORDS keyed lines"

# 3. Consume from the beginning, exit at end of partition; compare.
timeout 60 kcat -b "$bootstrap" -C -t "$topic" -K: -e -o beginning -q \
  >"$tmp/out.txt" 2>"$tmp/consume.err" || { cat "$tmp/consume.err" >&2; fail "kcat -C failed"; }
diff -u "$tmp/in.txt" "$tmp/out.txt" >"$tmp/diff.txt" || { head -n 40 "$tmp/diff.txt" >&2; fail "consumed lines differ from produced lines"; }

# 4. Offsets are 0..N-1 in order, all in partition 0.
timeout 60 kcat -b "$bootstrap" -C -t "$topic" -e -o beginning -q -f '%p %o\n' >"$tmp/offsets.txt" 2>"$tmp/consume.err" \
  || { cat "$tmp/consume.err" >&2; fail "kcat -C (offsets) failed"; }
seq 0 $((RECORDS - 1)) | sed 's/^/0 /' | diff -q - "$tmp/offsets.txt" >/dev/null || fail "offsets are not 0..$((RECORDS - 1)) in partition 0"
echo "kcat-smoke: consumed $RECORDS lines back, identical, offsets dense"

# 5. Every codec, as old librdkafka sends it: read back identical, and stored compressed as
#    sent (codec bits of every batch in the segment file), i.e. the broker neither refused the
#    codec (librdkafka then silently sends uncompressed) nor recompressed it.
for codec in gzip snappy lz4 zstd; do
  t=kcat-$codec
  timeout 60 kcat -b "$bootstrap" -P -t "$t" -K: -z "$codec" -X acks=all -X linger.ms=50 \
    <"$tmp/in.txt" >"$tmp/produce-$codec.txt" 2>&1 || { cat "$tmp/produce-$codec.txt" >&2; fail "kcat -P -z $codec failed"; }
  timeout 60 kcat -b "$bootstrap" -C -t "$t" -K: -e -o beginning -q >"$tmp/out-$codec.txt" 2>"$tmp/consume.err" \
    || { cat "$tmp/consume.err" >&2; fail "kcat -C ($codec) failed"; }
  diff -q "$tmp/in.txt" "$tmp/out-$codec.txt" >/dev/null || fail "$codec: consumed lines differ from produced lines"
  codecs=$(python3 - "$tmp/data/$t-0" <<'PY'
import glob, struct, sys
seen = set()
for seg in sorted(glob.glob(sys.argv[1] + "/*.log")):
    b = open(seg, "rb").read()
    pos = 0
    while pos + 61 <= len(b):
        length = struct.unpack(">i", b[pos + 8:pos + 12])[0]
        if length <= 0:
            break
        seen.add(struct.unpack(">h", b[pos + 21:pos + 23])[0] & 7)
        pos += 12 + length
print(" ".join(str(c) for c in sorted(seen)))
PY
)
  want=$(case $codec in gzip) echo 1;; snappy) echo 2;; lz4) echo 3;; zstd) echo 4;; esac)
  [ "$codecs" = "$want" ] || fail "$codec: stored batches have codec ids '$codecs', expected '$want'"
  echo "kcat-smoke: $codec: $RECORDS lines back identical, stored with codec id $want"
done

# 6. Stop by PID: SIGTERM, exit 0 within 30 s.
kill -TERM "$pid"
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "broker still running 30 s after SIGTERM"
code=0
wait "$pid" || code=$?
pid=
[ "$code" = 0 ] || fail "broker exit code $code after SIGTERM"
ok=1
echo "kcat-smoke: PASS"
