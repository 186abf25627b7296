"""What machine a benchmark ran on, printed beside every figure (shared by the scripts in this folder)."""

from __future__ import annotations

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


def describe() -> str:
    """CPU model, cores, torch threads (when torch is loaded) and the 1-minute load average."""
    import sys

    parts = [f"{platform.machine()} {cpu_name()}", f"{os.cpu_count()} cores"]
    if "torch" in sys.modules:
        parts.append(f"torch threads {sys.modules['torch'].get_num_threads()}")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    return ", ".join(parts)
