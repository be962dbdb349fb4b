"""What the benchmark scripts share: the machine line printed with their numbers.

The scripts run as ``python benchmarks/bench_X.py`` and put the repository root on
``sys.path`` first, so they import this as ``benchmarks._common``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(*extra: str) -> str:
    """Cores, CPU model, load average and Python version, then ``extra`` (library versions):
    what a benchmark's numbers depend on."""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    parts = [f"{os.cpu_count()} cores, {cpu_model()}{load}, Python {platform.python_version()}", *extra]
    return ", ".join(parts)
