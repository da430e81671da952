#!/usr/bin/env bash
# Measures wis-scraper's resident memory and CPU while it scrapes N fixture pods every
# INTERVAL ms on loopback. Prints one JSON line. Used by `./build.sh bench` (via bench/run.sh)
# and by hand:  scraper/bench.sh [ENDPOINTS] [INTERVAL_MS] [SECONDS] [PAD_LINES]
# The pods are `wis-scraper fixture-server` (one process, ENDPOINTS ports); only the scraper
# process is measured. Everything started here is stopped on exit.
set -euo pipefail
ENDPOINTS=${1:-256}
INTERVAL_MS=${2:-50}
SECONDS_MEASURED=${3:-20}
PAD_LINES=${4:-600}
BASE_PORT=${WIS_BENCH_BASE_PORT:-19100}
LISTEN_PORT=${WIS_BENCH_LISTEN_PORT:-19090}
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../target}"
bin="${WIS_SCRAPER_BIN:-$target/release/wis-scraper}"
if [[ ! -x "$bin" ]]; then
  (cd "$here/.." && cargo build -q -p wis-scraper --release)
fi
warmup_s=5
total_ms=$(( (SECONDS_MEASURED + warmup_s + 30) * 1000 ))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin" fixture-server --log-level warn --count "$ENDPOINTS" --base-port "$BASE_PORT" --pad-lines "$PAD_LINES" \
  --exit-after-ms "$total_ms" &
pids+=($!)
last=$((BASE_PORT + ENDPOINTS - 1))
# Wait (bounded) for the last fixture pod, so start-up connection errors do not count.
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:${last}/metrics" 2>/dev/null; do
  if (( SECONDS > deadline )); then echo "fixture pods never came up" >&2; exit 1; fi
  sleep 0.1
done
"$bin" --log-level warn --static "127.0.0.1:${BASE_PORT}-${last}" --interval-ms "$INTERVAL_MS" \
  --listen "127.0.0.1:${LISTEN_PORT}" --exit-after-ms "$total_ms" &
scraper=$!
pids+=($scraper)
# Wait (bounded) until every endpoint is healthy in the snapshot with its metrics read.
all_read() {
  curl -fsS "http://127.0.0.1:${LISTEN_PORT}/metrics" 2>/dev/null |
    awk -v n="$ENDPOINTS" '$1 == "wis_scraper_endpoints{state=\"healthy\"}" && $2 == n {h = 1}
                           $1 == "wis_scraper_endpoints{state=\"stale\"}" && $2 == 0 {s = 1}
                           END {exit !(h && s)}'
}
deadline=$((SECONDS + 30))
until all_read; do
  if (( SECONDS > deadline )); then echo "scraper never read ${ENDPOINTS} healthy endpoints" >&2; exit 1; fi
  sleep 0.2
done
sleep "$warmup_s"
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$scraper/stat"; }
metric() { curl -fsS "http://127.0.0.1:${LISTEN_PORT}/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
failures() { curl -fsS "http://127.0.0.1:${LISTEN_PORT}/metrics" | awk '/^wis_scraper_scrape_failures_total/ {s += $2} END {print s}'; }
c0=$(cpu); s0=$(metric wis_scraper_scrapes_total); f0=$(failures); t0=$(date +%s.%N)
sleep "$SECONDS_MEASURED"
c1=$(cpu); s1=$(metric wis_scraper_scrapes_total); f1=$(failures); t1=$(date +%s.%N)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$scraper/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$scraper/status")
failures=$((f1 - f0))
snap_bytes=$(metric wis_scraper_snapshot_bytes)
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v tk="$ticks" -v s0="$s0" -v s1="$s1" \
    -v n="$ENDPOINTS" -v iv="$INTERVAL_MS" -v rss="$rss" -v hwm="$hwm" -v f="$failures" -v sb="$snap_bytes" -v pad="$PAD_LINES" \
  'BEGIN { el = t1 - t0; printf "{\"bench\":\"wis-scraper\",\"endpoints\":%d,\"interval_ms\":%d,\"pad_lines\":%d,\"seconds\":%.1f,\"cpu_percent_of_one_core\":%.1f,\"rss_kib\":%d,\"peak_rss_kib\":%d,\"scrapes_per_s\":%.0f,\"expected_scrapes_per_s\":%.0f,\"failures_in_window\":%d,\"snapshot_bytes\":%d}\n", n, iv, pad, el, 100 * (c1 - c0) / tk / el, rss, hwm, (s1 - s0) / el, n * 1000 / iv, f, sb }'
