#!/usr/bin/env python3
"""List kernel loops that move vector registers to or from the stack (a review aid, not a test).

GCC sometimes keeps SIMD accumulators in memory: an array indexed through a loop it unrolls
late, a zeroing loop turned into a memset, products summed in a tree before the add. In a short
loop the store-to-load round trip then sets the pace (the ymm VNNI W2 decode GEMV ran at ~14
cycles per k-group instead of ~6: docs/notes/lowbit_gemm.md, twenty-fourth session).

Usage: python scripts/spill-scan.py BUILD_DIR [SOURCE_SUBSTRING ...]
BUILD_DIR is a scikit-build-core / CMake Ninja build directory (`pip install . -C
build-dir=BUILD_DIR`). Each kernel source is compiled to assembly with the build's own flags
(without LTO); every innermost loop holding a SIMD multiply or lookup and a vector move to or
from the stack is printed with its size. Long loops (60+ lines) usually hide the round trip;
fold and epilogue loops that store results are expected entries.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SIMD_WORK = re.compile(r"vpdpbusd|vpmaddubsw|vpmaddwd|vpshufb|vpermb|vpermi2b|vpermt2b|vpopcnt"
                       r"|vpmulld|vfmadd|vmulps")
STACK_MOVE = re.compile(r"vmov\S*\s+(%[xyz]mm\d+, )?-?\d*\(%r[sb]p[^)]*\)(, %[xyz]mm\d+)?$")
LABEL = re.compile(r"^(\.L\d+):")
JUMP = re.compile(r"\s+j\w+\s+(\.L\d+)")
FUNCTION = re.compile(r"^([A-Za-z_]\w*):")


def compile_commands(build_dir: str, wanted: list[str]) -> list[tuple[str, list[str]]]:
    out = subprocess.run(["ninja", "-C", build_dir, "-t", "commands"], check=True,
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        args = shlex.split(line)
        if "-c" not in args:
            continue
        src = args[args.index("-c") + 1]
        if "/csrc/" not in src or "/bindings/" in src or not src.endswith(".cc"):
            continue
        if wanted and not any(w in src for w in wanted):
            continue
        found[src] = args
    return sorted(found.items())


def to_assembly(args: list[str], out: Path) -> bool:
    keep, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a in ("-o", "-MT", "-MF"):
            skip = 1
            continue
        if a.startswith("-flto") or a in ("-fno-fat-lto-objects", "-MD", "-c"):
            continue
        keep.append(a)
    return subprocess.run(keep + ["-S", "-o", str(out)], capture_output=True).returncode == 0


def scan(asm: Path) -> list[tuple[str, int, int, int]]:
    lines = [l.rstrip() for l in asm.read_text().splitlines()
             if not re.match(r"\s*(#|\.cfi)", l) and "APP" not in l]
    loops, labels, fn = [], {}, ""
    for i, line in enumerate(lines):
        if m := FUNCTION.match(line):
            fn, labels = m.group(1), {}
        if m := LABEL.match(line):
            labels[m.group(1)] = i
        if (m := JUMP.match(line)) and m.group(1) in labels:
            loops.append((labels[m.group(1)], i, fn))
    hits = []
    for start, end, fn in loops:
        if any(start <= s and e <= end and (s, e) != (start, end) for s, e, _ in loops):
            continue  # not innermost
        body = lines[start:end + 1]
        work = sum(bool(SIMD_WORK.search(l)) for l in body)
        moves = sum(bool(STACK_MOVE.search(l.strip())) for l in body)
        if work and moves:
            hits.append((fn, work, moves, len(body)))
    return hits


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    commands = compile_commands(sys.argv[1], sys.argv[2:])
    with tempfile.TemporaryDirectory() as tmp:
        for src, args in commands:
            asm = Path(tmp) / (Path(src).stem + ".s")
            if not to_assembly(args, asm):
                print(f"{src}: did not compile to assembly")
                continue
            for fn, work, moves, size in scan(asm):
                name = subprocess.run(["c++filt", fn], capture_output=True, text=True).stdout
                print(f"{Path(src).name}: {name.strip()[:100]}: {work} SIMD ops, "
                      f"{moves} stack moves, {size} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
