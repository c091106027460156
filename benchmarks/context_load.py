"""Measure how long ``load_context`` takes on one big text file, and how much memory it needs.

The loader promises to hold at most about two copies of a file at its peak (the bytes and
the decoded str). This script writes an ASCII text file of the requested size, loads it
with ``load_context([path])`` in a fresh Python process (so nothing else inflates the
peak), and prints a Markdown table: wall time of the load, the child's peak RSS
(``ru_maxrss``), its RSS before loading, and the peak divided by the file size.

    python benchmarks/context_load.py --size-mb 256
    python benchmarks/context_load.py --size-mb 256 1024 --dir /var/tmp

The file is written once per size and removed afterwards unless ``--keep`` is given. The
load reads from the page cache (the file was just written), so the time is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
SRC = Path(__file__).resolve().parent.parent / "src"

# Runs in the child: import first so the baseline includes the interpreter and rlmx.
CHILD = """
import json, resource, sys, time
from rlmx.context import load_context

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

baseline = rss_kib()
start = time.perf_counter()
loaded = load_context([sys.argv[1]])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "seconds": seconds,
    "baseline_kib": baseline,
    "peak_kib": peak,
    "chars": loaded.total_chars,
    "type": type(loaded.value).__name__,
    "warnings": len(loaded.warnings),
}))
"""


def write_text_file(path: Path, size: int) -> None:
    """Write exactly ``size`` bytes of numbered ASCII lines."""
    line = "The quick brown fox jumps over the lazy dog; line {:>10} of a large context.\n"
    block = "".join(line.format(i) for i in range(13_000)).encode("ascii")
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            chunk = block[:remaining]
            f.write(chunk)
            remaining -= len(chunk)


def measure(path: Path) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def run(directory: Path, size_mb: int, keep: bool) -> tuple[str, ...]:
    size = size_mb * MIB
    path = directory / f"context-{size_mb}mb.txt"
    started = time.perf_counter()
    write_text_file(path, size)
    print(f"# wrote {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        r = measure(path)
    finally:
        if not keep:
            path.unlink()
    if r["chars"] != size or r["type"] != "str":
        raise SystemExit(f"unexpected load result: {r}")
    peak = r["peak_kib"] * 1024
    before = r["baseline_kib"] * 1024
    return (
        f"{size_mb:,} MiB",
        f"{r['seconds']:.2f}",
        f"{size / MIB / r['seconds']:,.0f}",
        f"{peak / MIB:,.0f}",
        f"{before / MIB:,.0f}",
        f"{peak / size:.2f}",
        f"{(peak - before) / size:.2f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb", type=int, nargs="+", default=[1024], help="file size(s) in MiB (default 1024)"
    )
    parser.add_argument("--dir", type=Path, help="where to write the file (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the file afterwards (only with --dir)"
    )
    args = parser.parse_args()

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        rows = [run(args.dir, size_mb, args.keep) for size_mb in args.size_mb]
    else:
        with tempfile.TemporaryDirectory(prefix="rlmx-bench-") as tmp:
            rows = [run(Path(tmp), size_mb, keep=False) for size_mb in args.size_mb]

    header = (
        "file size",
        "load time (s)",
        "MiB/s",
        "peak RSS (MiB)",
        "RSS before load (MiB)",
        "peak RSS / file size",
        "(peak - before) / file size",
    )
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
