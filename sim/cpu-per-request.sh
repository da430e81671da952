#!/usr/bin/env bash
# The simulator's own CPU per request: a 4-pod `sim fleet` under a fixed `sim load` run, CPU seconds
# of each process from /proc/<pid>/stat (utime + stime) divided by the requests answered.
#
#   sim/cpu-per-request.sh [SIM_BINARY] [-- extra `sim fleet` flags]
#
# SIM_BINARY defaults to $CARGO_TARGET_DIR/release/sim; the load generator is $LOAD_SIM (default: the
# same binary), so fleets of different builds can be compared under one load. The load: multi-turn
# chat, 16 conversations in flight, 600-token system prompts, 80-token questions, 48-token replies,
# 5 turns, 40 s.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sim="${1:-${CARGO_TARGET_DIR:-$here/../target}/release/sim}"
shift || true
[ "${1:-}" = "--" ] && shift
[ -x "$sim" ] || { echo "no sim binary at $sim (cargo build --release -p vllm-sim)" >&2; exit 2; }

out="$(mktemp -d)"
"$sim" fleet --pods 4 --base-port 0 --enable-prompt-tokens-details "$@" >"$out/fleet.log" 2>&1 &
fleet=$!
trap 'kill "$fleet" 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do grep -q "fleet ready" "$out/fleet.log" && break; sleep 0.1; done
grep -q "fleet ready" "$out/fleet.log" || { cat "$out/fleet.log" >&2; exit 1; }
pods=$(sed -n 's/^sim pod [0-9]* listening on //p' "$out/fleet.log" | paste -sd, -)

# CPU seconds (user + system) of a process so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

targets=$(echo "$pods" | sed 's/\([^,]*\)/http:\/\/\1/g')
before=$(cpu_s "$fleet")
/usr/bin/time -f "%U %S" -o "$out/load.time" "${LOAD_SIM:-$sim}" load --target "$targets" --fleet "$pods" \
    --workload multi-turn --groups 16 --system-tokens 600 --question-tokens 80 --output-tokens 48 --turns 5 \
    --concurrency 16 --duration 40s --seed 7 --out "$out/run.json" >"$out/load.txt"
after=$(cpu_s "$fleet")
requests=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['summary']['ok'])" "$out/run.json")
read -r lu ls <"$out/load.time"
grep -E "^requests|TTFT|hit rate|turn affinity" "$out/load.txt"
grep "fleet ready" "$out/fleet.log"
awk -v a="$after" -v b="$before" -v n="$requests" -v lu="$lu" -v ls="$ls" 'BEGIN {
    printf "fleet: %.2f CPU s for %d requests = %.0f us/request\n", a - b, n, (a - b) / n * 1e6
    printf "load:  %.2f CPU s for %d requests = %.0f us/request\n", lu + ls, n, (lu + ls) / n * 1e6 }'
