#!/usr/bin/env python3
"""Where an idle cluster's loopback bytes go, by message type (issue 14).

    sudo python3 bench/lo-capture.py SECONDS [PREFIX=GROUP ...]

Counts every IPv4 packet received on `lo` for SECONDS (each packet once, on its receive side,
as /proc/net/dev's rx counters do, headers included) and prints packets and bytes per second by
sender group, protocol and memberlist message type (`ping`, `ack`, `compound[n]`, `crc+...`,
`user`, ...; TCP as `ctl` and `data` segments). A sender group is a source-address prefix:
`127.0.1.=go 127.0.2.=vassal` compares two clusters started on those addresses. Run it in the
benchmark's network namespace (`ip netns exec NS ...`) to see only that cluster. Needs root
(a raw AF_PACKET socket); sends nothing.
"""
import collections
import socket
import struct
import sys
import time

TYPES = {0: "ping", 1: "indirect", 2: "ack", 3: "suspect", 4: "alive", 5: "dead",
         6: "pushpull", 7: "compound", 8: "user", 9: "compress", 10: "encrypt", 11: "nack",
         12: "crc", 13: "err"}


def label(payload):
    """The memberlist message type of a UDP payload, looking through a CRC header."""
    if not payload:
        return "empty"
    t = payload[0]
    name = TYPES.get(t, str(t))
    inner = payload
    if t == 12 and len(payload) > 5:
        inner = payload[5:]
        name = "crc+" + TYPES.get(inner[0], str(inner[0]))
    if inner[0] == 7 and len(inner) > 1:
        name += f"[{inner[1]}]"
    return name


def main():
    secs = float(sys.argv[1])
    groups = dict(a.split("=", 1) for a in sys.argv[2:]) or {"127.": "all"}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    s.bind(("lo", 0))
    s.settimeout(0.5)
    stats = collections.defaultdict(lambda: [0, 0])
    end = time.time() + secs
    while time.time() < end:
        try:
            pkt, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING or len(pkt) < 34:
            continue
        if struct.unpack("!H", pkt[12:14])[0] != 0x0800:
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 15) * 4
        src = socket.inet_ntoa(ip[12:16])
        group = next((g for p, g in groups.items() if src.startswith(p)), None)
        if group is None:
            continue
        body = ip[ihl:]
        if ip[9] == 17:
            key = (group, "udp", label(body[8:]))
        elif ip[9] == 6:
            data = len(body) > (body[12] >> 4) * 4
            key = (group, "tcp", "data" if data else "ctl")
        else:
            key = (group, str(ip[9]), "")
        stats[key][0] += 1
        stats[key][1] += len(pkt)
    totals = collections.defaultdict(float)
    for (group, proto, kind), (n, b) in sorted(stats.items()):
        print(f"{group:8} {proto:4} {kind:18} {n / secs:9.2f} pkts/s {b / secs:11.1f} B/s "
              f"{b / n:7.1f} B avg")
        totals[group] += b / secs
    for group, b in totals.items():
        print(f"{group}: {b:.1f} B/s in all")


if __name__ == "__main__":
    main()
