"""What machine a benchmark ran on, printed beside every figure (shared by the scripts in this folder)."""

from __future__ import annotations

import json
import os
import platform


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
    except OSError:
        pass
    return name or "unknown CPU"


def describe(load: bool = True) -> str:
    """CPU model, cores, torch threads (when torch is loaded) and the 1-minute load average (unless ``load=False``)."""
    import sys

    parts = [f"{platform.machine()} {cpu_name()}", f"{os.cpu_count()} cores"]
    if "torch" in sys.modules:
        parts.append(f"torch threads {sys.modules['torch'].get_num_threads()}")
    if load and hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    return ", ".join(parts)


def figure(
    name: str,
    value: float,
    unit: str,
    baseline: str | None = None,
    baseline_value: float | None = None,
    *,
    goal: str | None = None,
    ratio: float | None = None,
) -> dict:
    """Print one figure as a ``figure {json}`` line (what ``run_all.py`` collects): the value, the baseline measured in
    the same run and their ratio (value / baseline unless given), the goal, and the 1-minute load average now."""
    if ratio is None and baseline_value:
        ratio = value / baseline_value
    row = {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "goal": goal,
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print("figure " + json.dumps(row), flush=True)
    return row


def table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    """Print a markdown table between ``table <title>`` and ``table end`` lines (what ``run_all.py`` copies), and
    ``notes`` (one paragraph each) below it."""
    print(f"table {title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for note in notes:
        print(f"\n{note}")
    print("table end", flush=True)
