#!/usr/bin/env bash
# Go Serf against Vassal, cluster by cluster on loopback (crates/vassal-bench, `cluster-bench`):
# convergence, idle memory/CPU/traffic, user events, queries, failure detection and graceful
# leave, at N = 10, 50 and 100, three cluster lifetimes each, sequential start and then burst
# start. Go and Vassal alternate within each rep, so both share the machine's conditions.
#
#   bench/cluster.sh [extra cluster-bench arguments]     (e.g. --settle 5s --idle 20s)
#   SIZES=10 REPS=1 MODES=burst bench/cluster.sh         (smaller: sizes, reps, start modes)
#
# Writes bench/results/cluster-DATE.jsonl and prints the Markdown summary. Needs /usr/bin/serf
# (override with GO_SERF=...). Vassal runs as the static build the image and deploy/install.sh
# ship (deploy/build-image.sh: glibc linked in, non-PIE, as Go links its own); VASSAL_BUILD=dynamic
# runs target/release/vassal instead. A cluster lifetime takes 1-2 minutes; the defaults (36 of them)
# take about an hour.
# Before each cluster lifetime the harness drops the agent's binary from the page cache
# (posix_fadvise DONTNEED), so Go's and Vassal's agents both read theirs as after a reboot: a
# binary just written by the linker or dpkg sits in large folios that every agent maps whole.
# The harness stops only the agents it started (by PID), also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
go_serf=${GO_SERF:-/usr/bin/serf}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p vassal -p vassal-bench
vassal=$target/release/vassal
if [[ ${VASSAL_BUILD:-static} == static ]]; then
    deploy/build-image.sh --binary-only >&2
    vassal=$target/x86_64-unknown-linux-gnu/release/vassal
fi
mkdir -p bench/results
out=bench/results/cluster-$(date +%Y%m%d-%H%M%S).jsonl
# shellcheck disable=SC2054 # the commas are in --kinds and --sizes values
bench=("$target/release/cluster-bench" --go "$go_serf" --vassal "$vassal"
    --kinds go,vassal --sizes "${SIZES:-10,50,100}" --reps "${REPS:-3}" --out "$out")
# The idle-traffic figures read the `lo` counters of /proc/net/dev, which count every loopback
# packet on the host. As root, the runs happen in a network namespace of their own, whose `lo`
# carries nothing but this benchmark's agents (and no address outside it is reachable).
run=()
if [[ $(id -u) == 0 ]] && command -v ip >/dev/null; then
    ns=vassal-bench-$$
    ip netns add "$ns"
    trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
    ip -n "$ns" link set lo up
    run=(ip netns exec "$ns")
    echo "bench/cluster.sh: running in network namespace $ns" >&2
else
    echo "bench/cluster.sh: not root: idle traffic counts all of the host's loopback" >&2
fi
modes=${MODES:-sequential,burst}
for mode in ${modes//,/ }; do
    "${run[@]}" "${bench[@]}" --start "$mode" "$@"
done
"$target/release/cluster-bench" summarize "$out"
echo "results: $out" >&2
