"""rlmx against rlms (the RLM paper's reference library), workload by workload: one command.

    .venv/bin/python benchmarks/perf/run.py                 # full run (~7 min), writes RESULTS.md
    .venv/bin/python benchmarks/perf/run.py --quick         # smoke run (~1 min), prints only
    .venv/bin/python benchmarks/perf/run.py --workloads fanout,loop --repeat 5 --no-write

What it does:

1. makes (once, then reuses) a virtual environment holding rlms from PyPI, pinned
   (``--rlms-version``, default 0.1.3), under ``~/.cache/rlmx/perf/rlms-VERSION/``: the
   two libraries never share an interpreter. rlmx runs in the interpreter running this
   script (the repository's ``.venv``, rlmx installed there);
2. starts one loopback OpenAI-compatible mock server (``server.py``) whose root-model
   replies are scripted per workload and turn (``trajectories.py``; one text that ends the
   run in either library's convention) and whose sub-model answers from the prompt;
3. runs each workload for each configuration in a fresh driver process
   (``drive_rlmx.py`` / ``drive_rlms.py``), the configurations alternating in order over
   ``--repeat`` repetitions, each run after waiting (at most ``--settle`` s) for an idle
   machine; meanwhile it samples the driver's process tree from outside (``/proc``, every
   20 ms) for the sandbox workers' memory and CPU;
4. prints a table of medians and ratios (rlmx / rlms) per workload and the targets, and
   writes them into ``benchmarks/RESULTS.md`` (between ``perf-suite`` markers; a full run
   only, unless ``--write``; ``--no-write`` never), with the date, the machine and both
   versions.

Workloads: ``fanout`` (one cell, ``llm_query_batched`` of 1,000 prompts, 200 ms per reply),
``loop`` (30 trivial cells, no latency: the framework's time per iteration, measured at the
server as the gap between its reply and the next root request), ``context`` (10 MB, 100 MB
and 1 GiB str contexts: time from the call to the first model request, and the peak RSS of
every process of the run), ``concurrency`` (20 runs at once in one process, each with its
own context and answer), ``tokens`` (input tokens sent to the root model over 30 turns of
verbose cells). ``--quick``: one repetition, contexts capped at 100 MB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(BENCH))

import common  # noqa: E402
from fanout import machine_busy_s, wait_for_quiet  # noqa: E402

RLMS_VERSION = "0.1.3"
CACHE = Path.home() / ".cache" / "rlmx" / "perf"
RESULTS = BENCH / "RESULTS.md"
BEGIN = "<!-- perf-suite:begin (written by benchmarks/perf/run.py) -->"
END = "<!-- perf-suite:end -->"
MIB = 1024 * 1024
GIB = 1024 * MIB
RLMS_FANOUT = 16  # rlms' LMHandler(batch_max_concurrent=16); RLM(...) cannot change it
DRIVER_TIMEOUT_S = 600.0
# Targets (the issue's), checked after the run.
TARGET_FANOUT_SPEEDUP = 10.0
TARGET_FANOUT_IDEAL = 1.3
TARGET_LOCAL_LOOP = 0.5
TARGET_PEAK_1G = 2.5 * GIB


# ------------------------------------------------------------------ environments
def rlms_python(version: str) -> Path:
    """The interpreter of a venv holding ``rlms==version``; created on first use."""
    root = CACHE / f"rlms-{version}"
    python = root / "bin" / "python"
    marker = root / ".perf-installed"
    if python.exists() and marker.exists() and marker.read_text().strip() == version:
        return python
    print(f"# creating {root} with rlms=={version} from PyPI", file=sys.stderr)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"rlms=={version}",
        ],
        check=True,
    )
    got = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, rlm; print(m.version('rlms'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if got != version:
        raise SystemExit(f"{root}: installed rlms {got}, wanted {version}")
    marker.write_text(version + "\n")
    return python


def rlmx_version() -> str:
    from importlib.metadata import version

    text = version("rlmx")
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return text
    return f"{text} (commit {commit}{', src/ modified' if dirty else ''})"


def machine() -> dict[str, Any]:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
    }


def driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("PYTHONPATH", None)
    return env


# ------------------------------------------------------------------ the mock server
class Server:
    """``server.py`` in its own process, commanded over stdin."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self._line()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the mock server exited with status {self.proc.wait()}")
        return line.strip()

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()


# ------------------------------------------------------------------ sampling from outside
def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds) from ``/proc/PID/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / ticks


class TreeSampler(threading.Thread):
    """Samples RSS, peak RSS and CPU of a process and all its descendants."""

    def __init__(self, root: int, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval_s = interval_s
        self._parents: dict[int, int] = {}
        self.samples: list[tuple[float, float, dict[int, tuple[int, int, float]]]] = []
        self._stop_event = threading.Event()

    def _tree(self) -> set[int]:
        # A process's parent is read once, when its pid first shows up in /proc: listing
        # /proc is cheap, reading every process's stat at every tick is not.
        alive = {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()}
        for pid in list(self._parents):
            if pid not in alive:
                del self._parents[pid]
        for pid in alive - self._parents.keys():
            got = _stat(pid)
            if got is not None:
                self._parents[pid] = got[0]
        tree = {self.root}
        grew = True
        while grew:
            grew = False
            for pid, ppid in self._parents.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return tree

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.monotonic()
            procs: dict[int, tuple[int, int, float]] = {}
            for pid in self._tree():
                got = _stat(pid)
                if got is None:
                    continue
                rss, hwm = common.rss_and_peak_kib(pid)
                procs[pid] = (rss, hwm, got[1])
            self.samples.append((now, machine_busy_s(), procs))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Descendants' CPU and peaks, and the simultaneous RSS peak, within [t0, t1]."""
        before: dict[int, float] = {}
        last: dict[int, float] = {}
        peak: dict[int, int] = {}
        existed_before: set[int] = set()
        simultaneous: int | None = None
        busy = [(t, b) for t, b, _ in self.samples]
        for t, _, procs in self.samples:
            if t < t0:
                for pid, (_, _, cpu) in procs.items():
                    before[pid] = cpu
                    existed_before.add(pid)
                continue
            if t > t1 + 0.1:
                break
            if t <= t1:
                total = sum(rss for rss, _, _ in procs.values())
                simultaneous = total if simultaneous is None else max(simultaneous, total)
            for pid, (_, hwm, cpu) in procs.items():
                last[pid] = cpu
                peak[pid] = max(peak.get(pid, 0), hwm)
        children = [pid for pid in last if pid != self.root]
        inside = [(t, b) for t, b in busy if t0 <= t <= t1]
        return {
            "desc_cpu_s": sum(last[p] - before.get(p, 0.0) for p in children),
            "desc_peak_kib": sum(peak[p] for p in children),
            "desc_count": len(children),
            "desc_existed_before": sorted(set(children) & existed_before),
            "simultaneous_rss_kib": simultaneous,
            # The machine's busy share (all cores) between the first and last sample of
            # the window; too short a window (under 0.5 s) gives no estimate.
            "machine_busy_share": (
                (inside[-1][1] - inside[0][1])
                / ((inside[-1][0] - inside[0][0]) * (os.cpu_count() or 1))
                if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 0.5
                else math.nan
            ),
        }


# ------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class Config:
    key: str
    label: str
    library: str  # "rlmx" | "rlms"
    variant: str  # rlmx sandbox, or rlms environment
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    args: argparse.Namespace
    server: Server
    rlms_py: Path
    workdir: Path
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)

    def run(
        self,
        workload: str,
        config: Config,
        latency: float,
        params: dict[str, Any],
        root_latency: float | None = None,
    ) -> dict[str, Any]:
        """One driver process: one measured completion (or one concurrent batch)."""
        merged = {**params, **config.params}
        waited = wait_for_quiet(self.args.settle) if self.args.settle > 0 else 0.0
        self.waits.append(waited)
        self.server.ask(
            cmd="configure",
            workload=workload,
            latency=latency,
            root_latency=root_latency,
            params=merged,
        )
        out = self.workdir / f"result-{workload}-{config.key}.json"
        out.unlink(missing_ok=True)
        spec = {
            "workload": workload,
            "url": self.server.url,
            "variant": config.variant,
            "params": merged,
            "out": str(out),
        }
        if config.library == "rlmx":
            command = [sys.executable, str(HERE / "drive_rlmx.py"), json.dumps(spec)]
        else:
            command = [str(self.rlms_py), str(HERE / "drive_rlms.py"), json.dumps(spec)]
        cwd = Path(tempfile.mkdtemp(prefix="perf-driver-", dir=self.workdir))
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=driver_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            _, stderr = proc.communicate(timeout=DRIVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            _, stderr = proc.communicate()
        finally:
            sampler.stop()
        shutil.rmtree(cwd, ignore_errors=True)
        stats = self.server.ask(cmd="stats")
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(stderr.strip().splitlines()[-8:])
            print(
                f"!! {workload} {config.key} failed ({proc.returncode}):\n{tail}", file=sys.stderr
            )
            result: dict[str, Any] = {"failed": True, "stderr": tail[-2000:], "server": stats}
            self.runs.setdefault(workload, {}).setdefault(config.key, []).append(result)
            return result
        result = json.loads(out.read_text())
        result["server"] = stats
        result["waited_s"] = waited
        result.update(sampler.window(result["t0"], result["t1"]))
        derive(result)
        self.runs.setdefault(workload, {}).setdefault(config.key, []).append(result)
        return result


def derive(r: dict[str, Any]) -> None:
    """Numbers computed from the driver's, the server's and the sampler's records."""
    s = r["server"]
    r["host_cpu_s"] = r["cpu_self_s"] + max(r["cpu_children_s"], r["desc_cpu_s"])
    first = s.get("first_root_received")
    r["ttfr_s"] = first - r["t0"] if first is not None else math.nan
    last = s.get("last_replied")
    r["after_last_reply_s"] = r["t1"] - last if last is not None else math.nan
    driver_peak = r.get("driver_peak_kib") or 0
    r["peak_all_kib"] = driver_peak + r["desc_peak_kib"]
    ours = r["host_cpu_s"] + s.get("cpu_s", 0.0)
    cores = os.cpu_count() or 1
    # What other processes used: the machine's busy share less this run's own (driver,
    # sandbox, server) CPU over its wall time; an estimate (the windows differ a little).
    own_share = ours / (r["wall_s"] * cores) if r["wall_s"] > 0 else math.nan
    busy = r["machine_busy_share"]
    r["others_share"] = math.nan if math.isnan(busy) else max(0.0, busy - own_share)
    gaps = s.get("root_gaps_s") or []
    first_sub, last_sub = s.get("first_sub_received"), s.get("last_sub_replied")
    r["batch_span_s"] = last_sub - first_sub if first_sub and last_sub else math.nan
    r["to_first_sub_s"] = first_sub - r["t0"] if first_sub else math.nan
    root_timeline = s.get("root_timeline") or []
    r["root_reply_to_first_sub_s"] = (
        first_sub - root_timeline[0][1] if first_sub and root_timeline else math.nan
    )
    r["gap_median_ms"] = statistics.median(gaps) * 1000 if gaps else math.nan
    r["gap_p90_ms"] = (
        sorted(gaps)[max(0, math.ceil(0.9 * len(gaps)) - 1)] * 1000 if gaps else math.nan
    )


# ------------------------------------------------------------------ helpers for tables
def ok_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if not r.get("failed")]


def med(runs: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], float]) -> float:
    values = [key(r) if callable(key) else r[key] for r in ok_runs(runs)]
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(statistics.median(values)) if values else math.nan


def span(runs: list[dict[str, Any]], key: str, fmt: str = "{:.2f}") -> str:
    values = [r[key] for r in ok_runs(runs) if r.get(key) is not None]
    if len(values) < 2:
        return "-"
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def f(value: float, fmt: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def ratio(a: float, b: float) -> str:
    if any(v is None or math.isnan(v) for v in (a, b)) or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def both_ways(with_teardown: bool, without_teardown: bool) -> str:
    """A verdict against rlms' wall time, with and without its teardown."""
    if with_teardown and without_teardown:
        return "MET"
    if with_teardown:
        return "MET on wall; MISSED against rlms without its teardown"
    if without_teardown:
        return "MISSED on wall; MET against rlms without its teardown"
    return "MISSED"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def failures(runs: list[dict[str, Any]]) -> int:
    return sum(1 for r in runs if r.get("failed"))


def wrong(runs: list[dict[str, Any]]) -> int:
    return sum(1 for r in runs if r.get("failed") or not r.get("correct"))


def simultaneous(runs: list[dict[str, Any]]) -> str:
    values = [x["simultaneous_rss_kib"] for x in ok_runs(runs)]
    known = [v for v in values if v is not None]
    return mib(max(known)) if known else "- (run shorter than a sample)"


def mib(kib: float) -> str:
    return f(kib / 1024, "{:,.0f}")


# ------------------------------------------------------------------ workloads
def rotate(configs: list[Config], rep: int) -> list[Config]:
    """A/B alternation: forward on even repetitions, reversed on odd ones."""
    return configs if rep % 2 == 0 else list(reversed(configs))


def progress(workload: str, config: Config, rep: int, total: int, r: dict[str, Any]) -> None:
    brief = "FAILED" if r.get("failed") else f"wall {r['wall_s']:.3f}s ok={r.get('correct')}"
    print(f"# {workload} {config.label} ({rep + 1}/{total}): {brief}", file=sys.stderr)


def run_fanout(suite: Suite, repeat: int) -> list[Config]:
    c = suite.args.fanout_concurrency
    configs = [
        Config(
            "rlmx-c", f"rlmx isolated, max_concurrency={c}", "rlmx", "isolated", {"concurrency": c}
        ),
        Config(
            "rlmx-local-c",
            f"rlmx local, max_concurrency={c}",
            "rlmx",
            "local",
            {"concurrency": c},
        ),
        Config(
            "rlmx-16",
            f"rlmx isolated, max_concurrency={RLMS_FANOUT} (= rlms' fixed fan-out)",
            "rlmx",
            "isolated",
            {"concurrency": RLMS_FANOUT},
        ),
        Config("rlms", "rlms local (default; fan-out fixed at 16)", "rlms", "local"),
    ]
    params = {"prompts": suite.args.fanout_prompts}
    for rep in range(repeat):
        for config in rotate(configs, rep):
            # The root turn answers at once: the ideal counts the sub-calls' latency only.
            r = suite.run("fanout", config, suite.args.fanout_latency, params, root_latency=0.0)
            progress("fanout", config, rep, repeat, r)
    return configs


def run_simple(suite: Suite, workload: str, configs: list[Config], repeat: int) -> list[Config]:
    latency = suite.args.concurrency_latency if workload == "concurrency" else 0.0
    for rep in range(repeat):
        for config in rotate(configs, rep):
            r = suite.run(workload, config, latency, {})
            progress(workload, config, rep, repeat, r)
    return configs


def three_way() -> list[Config]:
    return [
        Config("rlmx-isolated", "rlmx isolated (default)", "rlmx", "isolated"),
        Config("rlmx-local", "rlmx local", "rlmx", "local"),
        Config("rlms", "rlms local (default)", "rlms", "local"),
    ]


def run_context(suite: Suite, repeat: int, sizes: list[int]) -> list[tuple[int, Config]]:
    done: list[tuple[int, Config]] = []
    for size in sizes:
        path = suite.workdir / f"context-{size}.txt"
        if not path.exists():
            print(f"# writing a {size / MIB:,.0f} MiB context file", file=sys.stderr)
            common.write_text_file(path, size)
        configs = [
            Config(f"{key}-{size}", label, lib, variant, {"path": str(path), "size": size})
            for key, label, lib, variant in (
                ("rlmx-isolated", "rlmx isolated (default)", "rlmx", "isolated"),
                ("rlmx-local", "rlmx local", "rlmx", "local"),
                ("rlms", "rlms local (default)", "rlms", "local"),
            )
        ]
        for rep in range(repeat):
            for config in rotate(configs, rep):
                r = suite.run("context", config, 0.0, {})
                progress("context", config, rep, repeat, r)
        done += [(size, c) for c in configs]
        path.unlink()
    return done


# ------------------------------------------------------------------ report
def size_label(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / 1e6:g} MB"


def report(suite: Suite, plan: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    runs = suite.runs
    lines: list[str] = []
    targets: list[list[str]] = []

    if "fanout" in plan:
        rs = runs["fanout"]
        configs: list[Config] = plan["fanout"]
        n, lat = suite.args.fanout_prompts, suite.args.fanout_latency
        rlms_wall = med(rs["rlms"], "wall_s")
        rlms_exec = med(rs["rlms"], "execution_time_s")
        lines += [
            f"### 1. Fan-out: one cell, `llm_query_batched` of {n:,} prompts, {lat * 1000:.0f} ms"
            " per sub-call reply (the root turn answers at once)",
            "",
        ]
        rows = []
        for cfg in configs:
            r = rs[cfg.key]
            conc = cfg.params.get("concurrency", RLMS_FANOUT)
            ideal = math.ceil(n / conc) * lat
            wall = med(r, "wall_s")
            rows.append(
                [
                    cfg.label,
                    str(conc),
                    f(wall),
                    span(r, "wall_s"),
                    f(ideal, "{:.1f}"),
                    ratio(wall, ideal),
                    f(med(r, "ttfr_s")),
                    f(med(r, "root_reply_to_first_sub_s")),
                    f(med(r, "batch_span_s")),
                    f(med(r, "after_last_reply_s")),
                    f(med(r, "host_cpu_s")),
                    str(max((x["server"]["max_sub_in_flight"] for x in ok_runs(r)), default=0)),
                    f"{wrong(r)} of {len(r)}",
                    ratio(wall, rlms_wall) if cfg.library == "rlmx" else "1.00x",
                    ratio(wall, rlms_exec) if cfg.library == "rlmx" else "-",
                ]
            )
        rows.append(
            [
                "rlms, excluding its teardown (its own `execution_time`)",
                str(RLMS_FANOUT),
                f(rlms_exec),
                span(rs["rlms"], "execution_time_s"),
                f(math.ceil(n / RLMS_FANOUT) * lat, "{:.1f}"),
                ratio(rlms_exec, math.ceil(n / RLMS_FANOUT) * lat),
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "1.00x",
            ]
        )
        lines += table(
            [
                "configuration",
                "concurrency",
                "wall s (median)",
                "range s",
                "ideal s",
                "wall / ideal",
                "call to root request s",
                "root reply to first sub-call s",
                "first sub-call to last reply s",
                "after last reply s",
                "host CPU s",
                "peak in flight",
                "wrong answers",
                "rlmx / rlms (wall)",
                "rlmx / rlms (excl. teardown)",
            ],
            rows,
        )
        top = configs[0]
        wall = med(rs[top.key], "wall_s")
        c = top.params["concurrency"]
        ideal = math.ceil(n / c) * lat
        speedup = rlms_exec / wall if wall else math.nan
        speedup_wall = rlms_wall / wall if wall else math.nan
        targets.append(
            [
                f"fan-out: rlmx (c={c}) >= {TARGET_FANOUT_SPEEDUP:g}x faster than rlms' default",
                f"{speedup_wall:.2f}x on wall ({speedup:.2f}x against rlms without its teardown)",
                both_ways(speedup_wall >= TARGET_FANOUT_SPEEDUP, speedup >= TARGET_FANOUT_SPEEDUP),
            ]
        )
        targets.append(
            [
                f"fan-out: rlmx within {TARGET_FANOUT_IDEAL}x of the ideal "
                f"ceil({n}/{c}) x {lat:g} s = {ideal:g} s (the whole completion)",
                f"{wall / ideal:.2f}x ({wall:.3f} s)",
                "MET" if wall / ideal <= TARGET_FANOUT_IDEAL else "MISSED",
            ]
        )
        batch = med(rs[top.key], "batch_span_s")
        targets.append(
            [
                "(for reference) the batch alone: first sub-call received to last reply sent, "
                "at the server",
                f"{batch / ideal:.2f}x ({batch:.3f} s)",
                "within" if batch / ideal <= TARGET_FANOUT_IDEAL else "beyond",
            ]
        )

    if "loop" in plan:
        rs = runs["loop"]
        configs = plan["loop"]
        base = med(rs["rlms"], "gap_median_ms")
        lines += [
            f"### 2. Loop overhead: {common.LOOP_ITERATIONS} turns of a trivial cell, no "
            "model latency",
            "",
        ]
        rows = []
        for cfg in configs:
            r = rs[cfg.key]
            gap = med(r, "gap_median_ms")
            rows.append(
                [
                    cfg.label,
                    f(gap, "{:.2f}"),
                    span(r, "gap_median_ms"),
                    f(med(r, "gap_p90_ms"), "{:.2f}"),
                    f(med(r, "ttfr_s") * 1000, "{:.1f}"),
                    f(med(r, "wall_s")),
                    f(med(r, "after_last_reply_s") * 1000, "{:.0f}"),
                    f(med(r, lambda x: x["server"]["root_requests"]), "{:.0f}"),
                    f"{wrong(r)} of {len(r)}",
                    ratio(gap, base),
                ]
            )
        lines += table(
            [
                "configuration",
                "overhead per iteration ms (median)",
                "range of run medians ms",
                "p90 ms",
                "call to first request ms",
                "wall s",
                "after last reply ms",
                "root requests",
                "wrong answers",
                "vs rlms",
            ],
            rows,
        )
        iso, loc = med(rs["rlmx-isolated"], "gap_median_ms"), med(rs["rlmx-local"], "gap_median_ms")
        targets.append(
            [
                "loop: rlmx isolated per-iteration overhead <= rlms' (in-process) default",
                f"{iso:.2f} ms vs {base:.2f} ms ({ratio(iso, base)})",
                "MET" if iso <= base else "MISSED",
            ]
        )
        targets.append(
            [
                f"loop: rlmx local <= {TARGET_LOCAL_LOOP}x rlms",
                f"{loc:.2f} ms vs {base:.2f} ms ({ratio(loc, base)})",
                "MET" if loc <= TARGET_LOCAL_LOOP * base else "MISSED",
            ]
        )

    if "context" in plan:
        rs = runs["context"]
        done: list[tuple[int, Config]] = plan["context"]
        lines += [
            "### 3. Context scale: a str context; time from the call to the first model "
            "request, peak RSS of every process",
            "",
        ]
        rows = []
        for size, cfg in done:
            r = rs[cfg.key]
            base_key = f"rlms-{size}"
            ttfr = med(r, "ttfr_s")
            peak = max((x["peak_all_kib"] for x in ok_runs(r)), default=math.nan)
            base_ttfr = med(rs[base_key], "ttfr_s")
            base_peak = max((x["peak_all_kib"] for x in ok_runs(rs[base_key])), default=math.nan)
            drv = max((x.get("driver_peak_kib") or 0 for x in ok_runs(r)), default=0)
            desc = max((x["desc_peak_kib"] for x in ok_runs(r)), default=0)
            rows.append(
                [
                    size_label(size),
                    cfg.label,
                    f(ttfr),
                    span(r, "ttfr_s"),
                    f(med(r, "wall_s")),
                    mib(peak),
                    f"{mib(drv)} / {mib(desc)}",
                    simultaneous(r),
                    mib(med(r, "rss_before_kib")),
                    f"{wrong(r)} of {len(r)}",
                    ratio(ttfr, base_ttfr) if cfg.library == "rlmx" else "-",
                    ratio(peak, base_peak) if cfg.library == "rlmx" else "-",
                ]
            )
        lines += table(
            [
                "context",
                "configuration",
                "to first request s (median)",
                "range s",
                "whole run s (one cell + answer)",
                "peak RSS, all processes MiB",
                "driver / sandbox MiB",
                "sampled simultaneous MiB",
                "driver RSS before the call MiB",
                "wrong answers",
                "rlmx / rlms time",
                "rlmx / rlms memory",
            ],
            rows,
        )
        largest = max(size for size, _ in done)
        iso_runs = rs[f"rlmx-isolated-{largest}"]
        peak = max((x["peak_all_kib"] for x in ok_runs(iso_runs)), default=math.nan) * 1024
        label = size_label(largest) + ("" if largest >= GIB else " (the target is for 1 GiB)")
        if largest >= GIB:
            targets.append(
                [
                    f"context {label}: rlmx (isolated) peak memory <= 2.5 GiB",
                    f"{peak / GIB:.2f} GiB",
                    "MET" if peak <= TARGET_PEAK_1G else "MISSED",
                ]
            )
        ttfr, base = med(iso_runs, "ttfr_s"), med(rs[f"rlms-{largest}"], "ttfr_s")
        targets.append(
            [
                f"context {label}: rlmx (isolated) time to first request <= rlms'",
                f"{ttfr:.3f} s vs {base:.3f} s ({ratio(ttfr, base)})",
                "MET" if ttfr <= base else "MISSED",
            ]
        )

    if "concurrency" in plan:
        rs = runs["concurrency"]
        configs = plan["concurrency"]
        n = common.CONCURRENCY_RUNS
        lines += [
            f"### 4. Concurrency: {n} runs at once in one process (rlmx: asyncio; rlms: "
            f"threads), {suite.args.concurrency_latency * 1000:.0f} ms per reply",
            "",
        ]
        rows = []
        counts: dict[str, list[int]] = {}
        for cfg in configs:
            per_rep = []
            for x in rs[cfg.key]:
                if x.get("failed"):
                    per_rep.append((0, 0, 0, n, 0, 0))
                    continue
                clean = {m["run"] for m in x["server"]["mixing"] if m["ok"]}
                dirty = {m["run"] for m in x["server"]["mixing"] if not m["ok"]}
                unmixed = {k for k in clean if k not in dirty}
                correct = {a["run"] for a in x["runs"] if a["correct"]}
                lost = {m["run"] for m in x["server"]["mixing"] if not m.get("own", True)}
                foreign = {m["run"] for m in x["server"]["mixing"] if m.get("foreign")}
                per_rep.append(
                    (
                        len(correct),
                        len(unmixed),
                        len(correct & unmixed),
                        int(x["errors"]),
                        len(lost),
                        len(foreign),
                    )
                )
            counts[cfg.key] = [p[2] for p in per_rep]
            rows.append(
                [
                    cfg.label,
                    ", ".join(str(p[0]) for p in per_rep),
                    ", ".join(str(p[1]) for p in per_rep),
                    ", ".join(str(p[2]) for p in per_rep),
                    ", ".join(str(p[3]) for p in per_rep),
                    ", ".join(f"{p[4]} / {p[5]}" for p in per_rep),
                    f(med(rs[cfg.key], "wall_s")),
                    f(med(rs[cfg.key], "host_cpu_s")),
                ]
            )
        lines += table(
            [
                "configuration",
                f"correct answers (of {n}, each repetition)",
                "unmixed transcripts",
                "correct and unmixed",
                "errors",
                "transcripts without own output / with another run's",
                "wall s (median)",
                "host CPU s",
            ],
            rows,
        )
        iso_counts = counts.get("rlmx-isolated", [])
        targets.append(
            [
                f"concurrency: rlmx {n}/{n} correct and unmixed (rlms: recorded)",
                f"rlmx isolated {', '.join(map(str, iso_counts))}; rlmx local "
                f"{', '.join(map(str, counts.get('rlmx-local', [])))}; rlms "
                f"{', '.join(map(str, counts.get('rlms', [])))}",
                "MET" if iso_counts and min(iso_counts) == n else "MISSED",
            ]
        )

    if "tokens" in plan:
        rs = runs["tokens"]
        configs = plan["tokens"]
        sizes = ", ".join(f"{s:,}" for s in common.TOKENS_PRINT_SIZES)
        lines += [
            f"### 5. Token efficiency: {common.TOKENS_ITERATIONS} turns whose cells print "
            f"{sizes} characters in turn (tokens counted at the server: ceil(chars/4) + 4 per "
            "message)",
            "",
        ]
        base = med(rs["rlms"], lambda x: x["server"]["root_input_tokens"])
        rows = []
        for cfg in configs:
            r = rs[cfg.key]
            tot = med(r, lambda x: x["server"]["root_input_tokens"])
            distinct = {x["server"]["root_input_tokens"] for x in ok_runs(r)}
            first = med(r, lambda x: x["server"]["root_tokens_per_request"][0])
            last = med(r, lambda x: x["server"]["root_tokens_per_request"][-1])
            rows.append(
                [
                    cfg.label,
                    f(tot, "{:,.0f}") + ("" if len(distinct) <= 1 else " (varied)"),
                    f(med(r, lambda x: x["server"]["root_requests"]), "{:.0f}"),
                    f(first, "{:,.0f}"),
                    f(last, "{:,.0f}"),
                    f(med(r, lambda x: x["server"]["root_output_tokens"]), "{:,.0f}"),
                    f(med(r, "input_tokens_reported"), "{:,.0f}"),
                    f"{wrong(r)} of {len(r)}",
                    ratio(tot, base),
                ]
            )
        lines += table(
            [
                "configuration",
                "root input tokens (total)",
                "root requests",
                "first request",
                "last request",
                "root output tokens",
                "library's own input-token count",
                "wrong answers",
                "vs rlms",
            ],
            rows,
        )
        tot = med(rs["rlmx-isolated"], lambda x: x["server"]["root_input_tokens"])
        targets.append(
            [
                "tokens: rlmx root input tokens <= rlms' on the same trajectory",
                f"{tot:,.0f} vs {base:,.0f} ({ratio(tot, base)})",
                "MET" if tot <= base else "MISSED",
            ]
        )
    return lines, targets


def like_for_like_notes(plan: dict[str, Any]) -> list[str]:
    notes = [
        "- Sandboxes are not like for like: rlms' default `local` environment runs model code "
        "in the driver's own process with a builtins whitelist; rlmx `isolated` (its default) "
        "runs it in a separate confined worker process (bwrap namespaces, Landlock, seccomp, "
        "rlimits). rlmx `local` (also in-process) is the like-for-like row.",
        "- Both libraries make real HTTP requests to the same mock server for the root model "
        "and for sub-calls; every count and token number comes from the server.",
        "- rlms needs a dummy `api_key` for its OpenAI client; rlmx uses the `vllm:` preset "
        "(no key). The server ignores each driver's warm-up completion (model `warmup`).",
    ]
    if "fanout" in plan:
        notes.append(
            "- Fan-out: rlms' `llm_query_batched` runs at most 16 requests at once "
            "(`LMHandler(batch_max_concurrent=16)`, not settable through `RLM`), so the rlmx "
            "row at the higher concurrency has no rlms counterpart; the row at 16 is the like-"
            "for-like one. rlms' wall time includes its teardown (its LM handler's "
            "`socketserver` shutdown waits up to 0.5 s): shown with and without it. Its "
            "`Connection: close` workaround (for a second `llm_query_batched` in one "
            "completion) was not needed: each workload calls it at most once."
        )
    if "concurrency" in plan:
        notes.append(
            "- Concurrency: rlms has no async API, so its 20 runs are 20 threads (one `RLM` "
            "each), unpatched; rlmx runs 20 `acompletion` calls on one event loop. "
            '"Unmixed" is checked at the server: the REPL output each run\'s second root '
            "request carries must hold that run's secret (its own output reached the model) "
            "and no other run's tag or secret. rlms' `local` REPL swaps the process-wide "
            "`sys.stdout` and `os.chdir`s into a per-run temporary folder, so concurrent runs "
            "lose their output to each other and can fail with `FileNotFoundError` once a "
            "finished run removes the folder that is the process's current directory."
        )
    if "context" in plan:
        notes.append(
            "- Context: rlmx sends its first model request while its sandbox loads the context "
            "(the first turn needs only the context's description), rlms after loading it; "
            "so the whole run (one cell that reads the context, then the answer) is shown "
            "beside the time to first request."
        )
    if "tokens" in plan:
        notes.append(
            "- Tokens: both libraries keep the whole history; each cuts a cell's output at "
            "20,000 characters (rlmx keeps the head and the tail, rlms the head) and adds its "
            "own framing (rlms: a list of the REPL's variable names; rlmx: a reminder of the "
            "query). The library's own count is rlmx's `result.usage` (whole tree) and rlms' "
            "`usage_summary` (this level only)."
        )
    return notes


def write_results(block: list[str]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    body = "\n".join([BEGIN, *block, END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + body + tail
    else:
        text = (
            text.rstrip("\n") + "\n\n## rlmx vs rlms (`benchmarks/perf/run.py`)\n\n" + body + "\n"
        )
    RESULTS.write_text(text)


# ------------------------------------------------------------------ main
def compile_rlmx() -> None:
    """Byte-compile rlmx's package, as ``pip install`` does for an installed package (and did
    for rlms in its venv). A checkout run with ``PYTHONDONTWRITEBYTECODE=1`` has no bytecode,
    and the isolated worker (``python -B``) would compile rlmx's modules on every start."""
    import rlmx

    package = Path(rlmx.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, contexts <= 100 MB")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; 1 with --quick)")
    parser.add_argument(
        "--workloads", default=",".join(common.WORKLOADS), help="comma-separated subset"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument(
        "--write", action="store_true", help="write RESULTS.md even for a quick or partial run"
    )
    parser.add_argument("--settle", type=float, help="max wait for an idle machine (30; 5 quick)")
    parser.add_argument("--rlms-version", default=RLMS_VERSION)
    parser.add_argument("--fanout-concurrency", type=int, default=256)
    parser.add_argument("--fanout-prompts", type=int, default=common.FANOUT_PROMPTS)
    parser.add_argument(
        "--fanout-latency", type=float, default=common.FANOUT_LATENCY_S, help="s per reply"
    )
    parser.add_argument(
        "--concurrency-latency",
        type=float,
        default=common.CONCURRENCY_LATENCY_S,
        help="s per reply",
    )
    parser.add_argument("--json", type=Path, help="also write every run's raw record here")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 5)
    if args.settle is None:
        args.settle = 5.0 if args.quick else 30.0
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(common.WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    sizes = [10_000_000, 100_000_000] + ([] if args.quick else [GIB])

    started = time.monotonic()
    compile_rlmx()
    rlms_py = rlms_python(args.rlms_version)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "rlmx": rlmx_version(),
        "rlms": args.rlms_version,
        "repeat": repeat,
        "command": "python benchmarks/perf/run.py " + " ".join(sys.argv[1:]),
    }
    print(f"# rlmx {meta['rlmx']}; rlms {meta['rlms']} in {rlms_py.parent.parent}", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="rlmx-perf-", dir="/var/tmp"))
    server = Server()
    suite = Suite(args, server, rlms_py, workdir)
    plan: dict[str, Any] = {}
    try:
        for workload in workloads:
            if workload == "fanout":
                plan["fanout"] = run_fanout(suite, repeat)
            elif workload == "context":
                plan["context"] = run_context(suite, repeat, sizes)
            elif workload == "tokens":
                configs = [c for c in three_way() if c.key != "rlmx-local"]
                plan["tokens"] = run_simple(suite, "tokens", configs, repeat)
            else:
                plan[workload] = run_simple(suite, workload, three_way(), repeat)
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    m = meta["machine"]
    lines, targets = report(suite, plan)
    others = [
        r["others_share"]
        for w in suite.runs.values()
        for rs in w.values()
        for r in ok_runs(rs)
        if not math.isnan(r["others_share"])
    ]
    busy_runs = sum(1 for o in others if o > 0.15)
    header = [
        f"- Command: `{meta['command'].strip()}` ({elapsed / 60:.1f} min)",
        f"- Date: {meta['date']}",
        f"- Machine: {m['system']}, {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}",
        f"- Versions: rlmx {meta['rlmx']}; rlms {meta['rlms']} (PyPI, own venv); both "
        "byte-compiled, as an installed package is",
        f"- Each number: median of {repeat} repetition(s), configurations alternating; each "
        f"run waited up to {args.settle:g} s for an idle machine (median wait "
        f"{statistics.median(suite.waits) if suite.waits else 0:.1f} s); other processes used "
        f"a median {statistics.median(others) if others else 0:.0%} of the machine during the "
        f"{len(others)} runs of 0.5 s or more"
        + (f", over 15% in {busy_runs} of them" if busy_runs else ""),
        "",
    ]
    block = [*header, *lines, "### Targets", ""]
    block += table(["target", "measured", ""], targets)
    block += ["### Not like for like", "", *like_for_like_notes(plan), ""]
    print("\n".join(block))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "runs": suite.runs}, indent=1))
    complete = set(workloads) == set(common.WORKLOADS) and not args.quick
    if not args.no_write and (complete or args.write):
        write_results(block)
        print(f"# written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
