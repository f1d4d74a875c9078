#!/usr/bin/env bash
# One large cluster on this machine (issue 14: 1,000 real agents on two cores), in a network
# namespace of its own, with the machine's load average logged every 20 s and a watchdog that
# stops the run if the machine stays swamped.
#
#   bench/scale.sh NAME [extra cluster-bench arguments]
#   KIND=go N=1000 JOIN=join bench/scale.sh go-1000-join --conv-timeout 10m
#
# KIND (vassal or go, default vassal), N (default 1000), JOIN (retry or join, default retry).
# Writes bench/results/scale-NAME.jsonl and, beside it, NAME.load. The watchdog: once GRACE
# seconds (default 600) have passed, a load average over LIMIT (default 400) at three checks
# in a row sends the harness SIGINT, on which it stops the agents it started (by PID). Needs
# root (the namespace) and a built tree (bench/cluster.sh builds both binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: bench/scale.sh NAME [cluster-bench arguments]}
shift
target=${CARGO_TARGET_DIR:-target}
vassal=$target/x86_64-unknown-linux-gnu/release/vassal
[[ -x $vassal ]] || vassal=$target/release/vassal
out=bench/results/scale-$name.jsonl
load=bench/results/scale-$name.load
: >"$load"
ns=vassal-scale-$$
ip netns add "$ns"
ip -n "$ns" link set lo up
bench_pid=
cleanup() {
    [[ -n $bench_pid ]] && kill -INT "$bench_pid" 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
}
trap cleanup EXIT
# Every agent holds a few sockets and the harness a connection to each observer.
ulimit -n "$(ulimit -Hn)"
ip netns exec "$ns" "$target/release/cluster-bench" --go "${GO_SERF:-/usr/bin/serf}" \
    --vassal "$vassal" --kinds "${KIND:-vassal}" --sizes "${N:-1000}" --reps 1 \
    --start burst --join-mode "${JOIN:-retry}" --member-handlers false --observers 100 \
    --out "$out" "$@" &
bench_pid=$!
start=$SECONDS over=0
while kill -0 "$bench_pid" 2>/dev/null; do
    sleep 20 # the watchdog's period, not a wait for a condition
    l=$(cut -d' ' -f1 /proc/loadavg)
    echo "$((SECONDS - start)) load=$l" >>"$load"
    if ((SECONDS - start > ${GRACE:-600})) && [[ ${l%.*} -gt ${LIMIT:-400} ]]; then
        over=$((over + 1))
    else
        over=0
    fi
    if ((over >= 3)); then
        echo "bench/scale.sh: load $l for a minute after ${GRACE:-600} s: stopping the run" >&2
        kill -INT "$bench_pid" || true
        break
    fi
done
wait "$bench_pid" || true
bench_pid=
echo "results: $out, load: $load" >&2
