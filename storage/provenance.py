"""Provenance: which code made a run, a dataset version or a checkpoint.

Every ``runs``, ``datasets`` and ``training_runs`` row records ``code_version()``, so a
number can always be traced back to the code that produced it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path


@functools.cache
def code_version() -> str:
    """What code produced a run or dataset: ``git describe`` of the checkout when there is
    one (``-dirty`` if it has local changes), else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "distillery-" + importlib.metadata.version("distillery")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
