#!/usr/bin/env python3
"""Writes crates/vassal/link-order.txt: the functions an agent runs, hottest first.

    bench/link-order.py MAP CALLGRIND_OUT... > crates/vassal/link-order.txt

MAP is the linker map of the stripped static binary the profiles were taken of (lld's
`-Map`, which crates/vassal/build.rs writes when VASSAL_LINK_MAP is set), and CALLGRIND_OUT
are callgrind's dumps of agents of that very binary (`--dump-instr=yes`). The binary has no
symbol table, so this maps the address of every instruction run to the input section that
holds it and prints one symbol per section, ordered by the instructions run in it (most
first). lld's `--symbol-ordering-file` then puts those sections at the start of `.text`,
side by side, so that an agent touches a few hundred contiguous pages of code instead of pages
scattered across the whole 7 MiB text. bench/link-order.sh runs the whole loop.
"""

import bisect
import collections
import re
import sys

# lld's map: VMA, LMA, size, alignment, then the output section (1 space), an input section
# (9 spaces: `file:(section)`) or a symbol (17 spaces).
LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+( +)(\S.*)$")
INPUT = re.compile(r"^(.*):\((\S+)\)$")


def read_map(path):
    """Input sections of executable output sections: sorted [start, end, name]."""
    sections = []
    in_text = False
    current = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            addr, size, indent, rest = int(m[1], 16), int(m[2], 16), len(m[3]), m[4]
            if indent <= 1:
                in_text = rest.startswith(".text")
                current = None
                continue
            if not in_text:
                continue
            if indent <= 9:
                im = INPUT.match(rest)
                current = None
                if im and size > 0:
                    section = im[2]
                    # `.text.NAME` (rustc and LLVM emit one section per function) is named by
                    # NAME itself; a C object's plain `.text` by the first symbol in it.
                    # LLVM's `.text.unlikely.NAME` (and `.hot.`, `.startup.`, `.exit.`)
                    # are named by NAME too.
                    own = None
                    if section.startswith(".text."):
                        own = section[len(".text."):]
                        for prefix in ("unlikely.", "hot.", "startup.", "exit."):
                            if own.startswith(prefix):
                                own = own[len(prefix):]
                                break
                    current = [addr, addr + size, own]
                    sections.append(current)
            elif current is not None and current[2] is None:
                current[2] = rest.strip()
    sections.sort()
    return sections


def read_costs(paths):
    """Instructions run at each address, summed over the dumps (`--dump-instr=yes`)."""
    by_addr = collections.Counter()
    for path in paths:
        pos = 0
        skip_next = False
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("calls="):
                    # The next line is the call's inclusive cost, at the call's own address.
                    skip_next = True
                    continue
                head = line[:1]
                if not (head.isdigit() or head in "+-*"):
                    continue
                parts = line.split()
                first = parts[0]
                if first.startswith("0x"):
                    pos = int(first, 16)
                elif first[0] == "+":
                    pos += int(first[1:], 0)
                elif first[0] == "-":
                    pos -= int(first[1:], 0)
                elif first != "*":
                    pos = int(first, 0)
                if skip_next:
                    skip_next = False
                    continue
                if len(parts) >= 2 and parts[1].isdigit():
                    by_addr[pos] += int(parts[1])
    return by_addr


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sections = read_map(sys.argv[1])
    starts = [s[0] for s in sections]
    costs = read_costs(sys.argv[2:])
    per_section = collections.Counter()
    missed = 0
    for addr, c in costs.items():
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0 or addr >= sections[i][1] or not sections[i][2]:
            missed += 1
            continue
        per_section[i] += c + 1  # +1: an address callgrind lists ran, even at cost 0
    total = sum(sections[i][1] - sections[i][0] for i in per_section)
    seen = set()
    for i, _ in per_section.most_common():
        name = sections[i][2]
        if name not in seen:
            seen.add(name)
            print(name)
    print(
        f"link-order.py: {len(costs)} profiled addresses, {len(seen)} sections "
        f"({total / 1048576:.2f} MiB), {missed} addresses outside any named section",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
