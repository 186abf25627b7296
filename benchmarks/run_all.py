"""Run every benchmark in this folder and write ``results.md`` (and ``results.json``) beside it.

Each script runs in its own process at one setting (``short`` by default: minutes each on 2 cores; ``smallest``:
seconds, what the slow test runs; ``full``: the scripts' own defaults). Its figures are the ``figure {json}`` lines it
prints (``machine.figure``: value, the baseline measured in the same run, their ratio, the goal, the load average),
or, for a script that ends with a plain number, that number; tables between ``table <title>`` and ``table end`` are
copied as they are. ``results.json`` keeps the latest entry of each script and setting, so running one script
(``--only``) updates its entry and leaves the others; ``results.md`` and the README's benchmark table are rendered
from it.

    python benchmarks/run_all.py                          # every script, short settings
    python benchmarks/run_all.py --only scaling --setting full   # the growth table at 100, 400 and 1,600 clips
    python benchmarks/run_all.py --setting smallest --out /tmp/bench   # seconds per script; README untouched
    python benchmarks/run_all.py --only scaling --setting full --script-args "--budget-min 90"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from machine import describe  # noqa: E402

from emotiw.artifacts import atomic_path  # noqa: E402

SETTINGS = ("smallest", "short", "full")
README_BEGIN, README_END = "<!-- benchmarks/results.md: begin -->", "<!-- benchmarks/results.md: end -->"


@dataclass
class Bench:
    """One script: its arguments per setting, and how to read a figure from a script without ``figure`` lines."""

    name: str
    args: dict[str, list[str]]
    last_line: dict | None = (
        None  # the figure a plain-number last line stands for (name, unit, baseline, goal)
    )
    parse: Callable[[str], list[dict]] | None = None  # figures from the text, for a script with neither
    prepare: Callable[[Path, str], list[str]] | None = None  # extra arguments built in a scratch folder
    optional: bool = False  # skipped (and said so) when the script is absent
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _fer_test_dir(tmp: Path, setting: str) -> list[str]:
    """A generated FER2013-layout folder (``test/<emotion>/*.png``) for fer2013.py, sized by the setting."""
    from emotiw.synth import make_fer, write_fer_images

    per_class = {"smallest": 3, "short": 40, "full": 200}[setting]
    write_fer_images(tmp / "fer", make_fer(per_class, seed=0, workers=1))
    return ["--test-dir", str(tmp / "fer" / "test")]


BENCHMARKS = [
    Bench(
        "irnn",
        {
            "smallest": [
                "--batch",
                "8",
                "--frames",
                "20",
                "--rounds",
                "1",
                "--per-round",
                "1",
                "--warmup",
                "0",
            ],
            "short": ["--rounds", "3", "--per-round", "1", "--warmup", "1"],
            "full": [],
        },
    ),
    Bench(
        "cnn_train",
        {
            "smallest": ["--faces", "256", "--rounds", "1"],
            "short": ["--faces", "2048", "--rounds", "3"],
            "full": [],
        },
    ),
    Bench("faces", {"smallest": [], "short": [], "full": []}, notes="the tiny generated preset"),
    Bench(
        "features",
        {
            "smallest": [
                "--clips",
                "1",
                "--seconds",
                "1",
                "--blocks",
                "1000",
                "--loop-blocks",
                "100",
                "--words",
                "8",
            ],
            "short": ["--clips", "4", "--seconds", "2", "--blocks", "5000", "--loop-blocks", "500"],
            "full": [],
        },
    ),
    Bench(
        "synth",
        {"smallest": ["--preset", "tiny"], "short": ["--preset", "tiny"], "full": []},
    ),
    Bench(
        "combiner",
        {
            "smallest": ["--n-samples", "1000", "--loop-slice", "200"],
            "short": ["--n-samples", "10000"],
            "full": [],
        },
    ),
    Bench(
        "fer2013",
        {"smallest": [], "short": [], "full": []},
        last_line={
            "name": "accuracy of the shipped CNN on generated FER2013-layout test faces",
            "unit": "accuracy",
            "baseline": "chance (1/7)",
            "baseline_value": 1 / 7,
        },
        prepare=_fer_test_dir,
    ),
    Bench(
        "predict",
        {
            "smallest": ["--frames", "20", "--repeats", "1"],
            "short": ["--frames", "120", "--repeats", "1"],
            "full": [],
        },
        last_line={"name": "predict.py end to end, detector every 5 frames", "unit": "frames/s"},
        optional=True,
    ),
    Bench(
        "scaling",
        {
            "smallest": ["--sizes", "tiny"],
            "short": ["--sizes", "100"],
            "full": ["--sizes", "100", "400", "1600"],
        },
        notes="stage=all scale=quick per size; the growth goals need two sizes (--setting full)",
    ),
]


def versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for module in ("torch", "lightning", "numpy", "sklearn"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    threads = os.environ.get("OMP_NUM_THREADS")
    parts.append(f"OMP_NUM_THREADS={threads}" if threads else "OMP_NUM_THREADS unset")
    return ", ".join(parts)


def parse_output(text: str, bench: Bench) -> tuple[list[dict], list[dict]]:
    """(figures, tables) of a script's stdout."""
    figures, tables, current = [], [], None
    for line in text.splitlines():
        if current is not None:
            if line == "table end":
                tables.append(current)
                current = None
            else:
                current["lines"].append(line)
        elif line.startswith("figure {"):
            figures.append(json.loads(line[len("figure ") :]))
        elif line.startswith("table "):
            current = {"title": line[len("table ") :], "lines": []}
    if not figures and bench.parse is not None:
        figures = bench.parse(text)
    if not figures and bench.last_line is not None:
        lines = text.strip().splitlines()
        try:
            value = float(lines[-1])
        except (IndexError, ValueError):
            value = None
        if value is not None:
            row = {"baseline": None, "baseline_value": None, "goal": None, **bench.last_line, "value": value}
            row["ratio"] = value / row["baseline_value"] if row["baseline_value"] else None
            row["load"] = None
            figures.append(row)
    return figures, tables


def run_bench(bench: Bench, setting: str, extra: list[str] = ()) -> dict:
    script = HERE / f"{bench.name}.py"
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    entry = {
        "benchmark": bench.name,
        "setting": setting,
        "started": started,
        "machine": describe(load=False),
        "versions": versions(),
    }
    if not script.is_file():
        return {**entry, "returncode": None, "error": f"{script.name} is absent", "figures": [], "tables": []}
    with tempfile.TemporaryDirectory(prefix=f"run_all_{bench.name}_") as tmp:
        args = [*bench.args[setting], *extra]
        if bench.prepare is not None:
            args += bench.prepare(Path(tmp), setting)
        cmd = [sys.executable, str(script), *args]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
        load_start, start = os.getloadavg()[0], time.perf_counter()
        print(f"== {bench.name} ({setting}): {' '.join(cmd[1:])} (load average {load_start:.1f})", flush=True)
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    figures, tables = parse_output(proc.stdout, bench)
    for row in figures:
        if row.get("load") is None:
            row["load"] = os.getloadavg()[0]
    entry.update(
        command="python " + " ".join([f"benchmarks/{script.name}", *bench.args[setting], *extra]),
        seconds=round(seconds, 1),
        load=[round(load_start, 2), round(os.getloadavg()[0], 2)],
        returncode=proc.returncode,
        figures=figures,
        tables=tables,
        notes=bench.notes,
    )
    if proc.returncode != 0 or not figures:
        entry["error"] = (proc.stderr or proc.stdout).strip()[-2000:] or "no figure printed"
    print(
        f"   {len(figures)} figures in {seconds:.0f} s"
        + (f"; ERROR: {entry['error'][-300:]}" if "error" in entry else ""),
        flush=True,
    )
    return entry


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    text = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def figures_table(entries: list[dict]) -> list[str]:
    lines = [
        "| benchmark (setting) | figure | value | baseline, same run | ratio | goal | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        for f in e["figures"]:
            base = f"{f['baseline']}: {_num(f['baseline_value'], f['unit'])}" if f.get("baseline") else ""
            if f.get("baseline") and f.get("baseline_value") is None:
                base = f["baseline"]
            ratio = f"{f['ratio']:.3g}x" if f.get("ratio") is not None else ""
            load = f"{f['load']:.1f}" if f.get("load") is not None else ""
            lines.append(
                f"| {e['benchmark']} ({e['setting']}) | {f['name']} | {_num(f['value'], f['unit'])} | {base} | "
                f"{ratio} | {f.get('goal') or ''} | {load} |"
            )
        if e.get("error"):
            first = e["error"].strip().splitlines()[-1][:160]
            lines.append(f"| {e['benchmark']} ({e['setting']}) | not measured: {first} | | | | | |")
    return lines


def render(entries: list[dict]) -> str:
    latest = max(entries, key=lambda e: e["started"])
    out = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py` from `results.json`; do not edit by hand. Each ratio is the value",
        "over the baseline named beside it, both measured in the same run of the same script. Load is the 1-minute load",
        "average when the figure was taken: on the 2 cores of this machine anything above 2 means other jobs shared",
        "them, which slows every figure (ratios of interleaved measurements less so).",
        "",
        f"Latest run: {latest['started']} on {latest['machine']}; {latest['versions']}.",
        "",
        "## Figures",
        "",
        *figures_table(entries),
        "",
    ]
    for e in entries:
        for t in e["tables"]:
            out += [
                f"## {t['title']}",
                "",
                f"`{e['command']}`, {e['started']}, load average {e['load'][0]:.1f} "
                f"at the start and {e['load'][1]:.1f} at the end.",
                "",
                *t["lines"],
                "",
            ]
    out += [
        "## Runs",
        "",
        "| benchmark (setting) | command | started | seconds | load start/end | machine |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        load = "/".join(f"{x:.1f}" for x in e.get("load", []))
        out.append(
            f"| {e['benchmark']} ({e['setting']}) | `{e.get('command', '')}` | {e['started']} | {e.get('seconds', '')} | "
            f"{load} | {e['machine']}; {e['versions']} |"
        )
    return "\n".join(out) + "\n"


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the README's benchmark table (between the markers) with the figures of results.md."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: no {README_BEGIN} ... {README_END} markers for the benchmark table")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    section = markdown.split("## Figures\n\n", 1)[1].split("\n\n", 1)[0]
    _write_text(readme, f"{head}{README_BEGIN}\n{section}\n{README_END}{tail}")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    path.chmod(0o644)  # a repository file (the temporary file was created 0600)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=SETTINGS, default="short")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run these scripts only")
    ap.add_argument("--out", type=Path, default=HERE, help="folder of results.json and results.md")
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite results.md (and README) from results.json"
    )
    ap.add_argument(
        "--script-args", default="", help="more arguments for the one script named by --only (one string)"
    )
    args = ap.parse_args(argv)
    extra = shlex.split(args.script_args)
    if extra and (not args.only or len(args.only) != 1):
        ap.error(f"--script-args {args.script_args!r} needs exactly one script named by --only")
    store_path = args.out / "results.json"
    store = json.loads(store_path.read_text()) if store_path.is_file() else {}
    print(f"machine: {describe()}; {versions()}", flush=True)
    for bench in BENCHMARKS:
        if args.render_only or (args.only and bench.name not in args.only):
            continue
        if bench.optional and not (HERE / f"{bench.name}.py").is_file():
            print(f"== {bench.name}: absent, skipped", flush=True)
            continue
        entry = run_bench(bench, args.setting, extra)
        store[f"{bench.name} ({args.setting})"] = entry
        _write_text(
            store_path, json.dumps(store, indent=1) + "\n"
        )  # after each script: a later failure loses nothing
    order = {b.name: i for i, b in enumerate(BENCHMARKS)}
    entries = sorted(
        store.values(), key=lambda e: (order.get(e["benchmark"], 99), SETTINGS.index(e["setting"]))
    )
    markdown = render(entries)
    results = args.out / "results.md"
    _write_text(results, markdown)
    if args.out.resolve() == HERE:
        update_readme(REPO / "README.md", markdown)
    print(f"wrote {results}")
    return results


if __name__ == "__main__":
    main()
