#!/usr/bin/env bash
# Regenerates crates/vassal/link-order.txt, the hot-code-first order the static agent is linked
# in (see crates/vassal/build.rs and bench/RESULTS.md, "What each change bought").
#
#   bench/link-order.sh                   # build, profile a 10-agent cluster lifetime, write the list
#   LINK_ORDER_KEEP=1 bench/link-order.sh # the same, keeping the map, profiles and agent logs
#
# 1. builds the static binary (deploy/build-image.sh --binary-only) with its linker map;
# 2. runs one 10-agent cluster-bench lifetime (join, idle, event, query, kill, leave) in which
#    three agents run under valgrind's callgrind, dumping their profile every few seconds (an
#    agent killed with -9 keeps what it dumped);
# 3. maps the profiled addresses to the binary's input sections (bench/link-order.py) and writes
#    them, hottest first, to crates/vassal/link-order.txt.
# Rebuild afterwards (deploy/build-image.sh --binary-only) to link in the new order. Needs
# valgrind and Debian's serf (scripts/setup); takes about five minutes on two cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "link-order.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/link-order.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n ${LINK_ORDER_KEEP:-} ]]; then echo "link-order.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

VASSAL_LINK_MAP="$work/vassal.map" "$root/deploy/build-image.sh" --binary-only
install -m 0755 "$target/x86_64-unknown-linux-gnu/release/vassal" "$work/vassal"
cargo build --manifest-path "$root/Cargo.toml" --release --locked -p vassal-bench

# The agent binary cluster-bench starts: three agents under callgrind, the others as they are.
mkdir -p "$work/cg" "$work/pids"
cat >"$work/agent" <<EOF
#!/usr/bin/env bash
case " \$* " in
*" -node=vassal0000 "* | *" -node=vassal0003 "* | *" -node=vassal0007 "*)
    echo \$\$ >"$work/pids/\$\$"
    exec valgrind --quiet --tool=callgrind --dump-instr=yes \\
        --callgrind-out-file="$work/cg/%p.out" "$work/vassal" "\$@" ;;
*) exec "$work/vassal" "\$@" ;;
esac
EOF
chmod +x "$work/agent"

# Dump every profiled agent's counters every 8 s until the run ends.
(
    while sleep 8; do
        for f in "$work"/pids/*; do
            [[ -e $f ]] || continue
            p=$(basename "$f")
            if kill -0 "$p" 2>/dev/null; then
                callgrind_control -d "$p" >/dev/null 2>&1 || true
            fi
        done
    done
) &
pids+=($!)

"$target/release/cluster-bench" --vassal "$work/agent" --kinds vassal --sizes 10 --reps 1 \
    --settle 20s --idle 30s --events 2 --queries 2 --conv-timeout 300s --status-timeout 180s \
    --out "$work/run.jsonl" >"$work/bench.log" 2>&1 ||
    { tail -20 "$work/bench.log" >&2; echo "link-order.sh: the cluster run failed" >&2; exit 1; }

python3 "$root/bench/link-order.py" "$work/vassal.map" "$work"/cg/*.out* >"$root/crates/vassal/link-order.txt"
echo "link-order.sh: wrote crates/vassal/link-order.txt ($(wc -l <"$root/crates/vassal/link-order.txt") functions); rebuild to use it"
