#!/usr/bin/env bash
# The cost of metrics on an idle agent (issue 13): two 3-node Vassal clusters side by side on
# loopback, one with no sink configured (no recorder installed) and one with every sink on
# (-metrics-addr scraped every second, statsd to a UDP receiver, statsite to a TCP receiver);
# after a warm-up, each agent's CPU time over the window and its resident set at the end.
#
#   bench/metrics-idle.sh [SECONDS]        (default 60; VASSAL_BIN defaults to target/release)
#
# Prints a Markdown table for bench/RESULTS.md. Stops only the processes it started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
warmup=10
bin=${VASSAL_BIN:-${CARGO_TARGET_DIR:-target}/release/vassal}
[[ -x $bin ]] || { echo "no vassal binary at $bin (cargo build --release --bin vassal)" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ip_off=127.0.91.1
ip_on=127.0.91.2
statsd=$ip_on:18125
statsite=$ip_on:18126

# Receivers that read and discard, as a statsd or statsite server would.
python3 - "$statsd" "$statsite" <<'PY' &
import socket, sys, threading
def udp(a):
    h, p = a.rsplit(":", 1); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((h, int(p)))
    while True: s.recv(65536)
def tcp(a):
    h, p = a.rsplit(":", 1); l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((h, int(p))); l.listen(8)
    while True:
        c, _ = l.accept()
        threading.Thread(target=lambda c=c: [None for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()
threading.Thread(target=udp, args=(sys.argv[1],), daemon=True).start()
tcp(sys.argv[2])
PY
pids+=($!)
echo "{\"statsd_addr\": \"$statsd\", \"statsite_addr\": \"$statsite\"}" >"$tmp/sinks.json"

start_cluster() { # mode ip
    local mode=$1 ip=$2 i extra
    for i in 1 2 3; do
        extra=()
        if [[ $mode == on ]]; then
            extra=(-metrics-addr="$ip:1910$i" -config-file="$tmp/sinks.json")
        fi
        [[ $i == 1 ]] || extra+=(-join="$ip:17941")
        "$bin" agent -node="$mode$i" -bind="$ip:1794$i" -rpc-addr="$ip:1737$i" "${extra[@]}" \
            >"$tmp/$mode$i.log" 2>&1 &
        pids+=($!)
        echo "$!" >"$tmp/$mode$i.pid"
        sleep 0.5
    done
}
start_cluster off "$ip_off"
start_cluster on "$ip_on"

# Prometheus' part: scrape each metrics page every second.
(
    while true; do
        for i in 1 2 3; do curl -s -o /dev/null "http://$ip_on:1910$i/metrics" || true; done
        sleep 1
    done
) &
pids+=($!)

sleep "$warmup"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A before
for n in off1 off2 off3 on1 on2 on3; do before[$n]=$(ticks "$(cat "$tmp/$n.pid")"); done
sleep "$window"
hz=$(getconf CLK_TCK)
echo "| agent | metrics | CPU over ${window} s | CPU % | RSS |"
echo "|---|---|---|---|---|"
for n in off1 off2 off3 on1 on2 on3; do
    pid=$(cat "$tmp/$n.pid")
    kill -0 "$pid" 2>/dev/null || { echo "$n exited:"; cat "$tmp/$n.log"; exit 1; }
    used=$(( $(ticks "$pid") - ${before[$n]} ))
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    awk -v n="$n" -v u="$used" -v hz="$hz" -v w="$window" -v r="$rss" 'BEGIN {
        printf "| %s | %s | %.2f s | %.2f %% | %.1f MiB |\n", n, (n ~ /^on/ ? "all sinks" : "off"),
            u / hz, 100 * u / hz / w, r / 1024 }'
done
