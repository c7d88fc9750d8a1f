#!/usr/bin/env bash
# Bounded fuzzing of Odradek's untrusted-input decoders, for CI (see docs/fuzzing.md):
#   1. install cargo-fuzz if it is missing (`cargo install cargo-fuzz --locked`, stable);
#   2. build every target under fuzz/ with libFuzzer and no sanitizer (`-s none` is what builds
#      on the stable toolchain; debug assertions and overflow checks stay on);
#   3. run each target for FUZZ_SECONDS over its committed seed corpus (fuzz/corpus/<target>/),
#      writing new inputs to a scratch directory so the committed corpus is never touched;
#   4. fail if any target crashes (panic, failed property, timeout, out-of-memory) or runs
#      nothing; print the crashing input's path and hex dump so it can be reproduced.
#
# Environment: FUZZ_SECONDS (default 25, per target), FUZZ_TARGETS (default: every target),
# FUZZ_TIMEOUT_SECONDS (one input's limit, default 10), FUZZ_SCRATCH (default: a temp dir),
# CARGO_FUZZ_VERSION (default: the newest; pass e.g. 0.13.1 to pin), FUZZ_RELEASE=1 (optimised build).
# Reproduce a crash: cargo fuzz run -s none --codegen-units 16 <target> <artifact file>
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${FUZZ_SECONDS:-25}
INPUT_TIMEOUT=${FUZZ_TIMEOUT_SECONDS:-10}
TARGETS=${FUZZ_TARGETS:-"request record_batch segment_recovery"}
started=$(date +%s)

step() { printf '\n==> %s\n' "$*"; }

step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  version_arg=()
  if [ -n "${CARGO_FUZZ_VERSION:-}" ]; then version_arg=(--version "$CARGO_FUZZ_VERSION"); fi
  echo "cargo install cargo-fuzz --locked ${version_arg[*]}"
  cargo install cargo-fuzz --locked "${version_arg[@]}"
fi
cargo fuzz --version

# libFuzzer's runtime is C++: libfuzzer-sys compiles it with the system C++ compiler.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  echo "no C++ compiler (libfuzzer-sys builds libFuzzer from source): apt-get install g++" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q --no-install-recommends g++
  else
    exit 1
  fi
fi

# No sanitizer (what stable can build). A dev build by default: its cold build is about 4x
# faster than a release one (3 min vs 12 min on a loaded 2-core VM), the right trade for a short
# CI run; FUZZ_RELEASE=1 builds optimised (16 codegen units) for long runs. `run` must get the
# same flags or it rebuilds everything.
if [ "${FUZZ_RELEASE:-0}" = 1 ]; then
  FUZZ_FLAGS=(-s none --codegen-units 16)
else
  FUZZ_FLAGS=(-s none --dev)
fi
step "cargo fuzz build ${FUZZ_FLAGS[*]} (fuzz/target)"
for target in $TARGETS; do
  cargo fuzz build "${FUZZ_FLAGS[@]}" "$target"
done

SCRATCH=${FUZZ_SCRATCH:-$(mktemp -d -t odradek-fuzz.XXXXXX)}
failed=()
summary=()
for target in $TARGETS; do
  step "fuzz $target for ${SECONDS_PER_TARGET}s"
  work="$SCRATCH/$target"
  mkdir -p "$work"
  log="$SCRATCH/$target.log"
  set +e
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout="$INPUT_TIMEOUT" \
    -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  tail -n 25 "$log"
  runs=$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$log" | tail -n 1)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$target: CRASH (exit $status)")
    for artifact in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "crashing input: $artifact"
      od -A d -t x1 "$artifact" | head -n 40 || true
      echo "reproduce: cargo fuzz run ${FUZZ_FLAGS[*]} $target $artifact"
    done
  elif [ -z "$runs" ] || [ "$runs" -eq 0 ]; then
    failed+=("$target")
    summary+=("$target: no runs recorded (see $log)")
  else
    summary+=("$target: $runs runs in ${SECONDS_PER_TARGET}s, no crash")
  fi
done
if [ -z "${FUZZ_SCRATCH:-}" ]; then rm -rf "$SCRATCH"; fi

step "summary ($(( $(date +%s) - started ))s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: ${#summary[@]} targets, no crash"
