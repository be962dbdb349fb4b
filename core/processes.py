"""Server processes distillery starts (a vLLM server, a Prefect server): their lifetimes.

    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent_preexec())
    ...
    stop_group(proc, grace_s=15)        # SIGTERM the whole group, wait, then SIGKILL what is left

A server runs in its own process group (``start_new_session``), so stopping it reaches
the workers it forks too. ``die_with_parent_preexec`` covers the one exit no ``finally``
or ``atexit`` sees, a SIGKILL of the process that started the server: Linux then
terminates the server itself, so a killed command leaves no orphan behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM this process when its parent dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties the child's life to this process, or None where it cannot.

    Linux sends the death signal when the *thread* that forked exits, so it is only safe
    from the main thread (which lives as long as the process); elsewhere (and off Linux)
    the caller relies on its own stop()/atexit alone."""
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid: int, *, grace_s: float = 15.0, reap: subprocess.Popen | None = None) -> None:
    """SIGTERM process group ``pgid``, wait up to ``grace_s``, then SIGKILL what is left.

    ``reap``: the group leader, if this process started it (polled, or it would stay a
    zombie member of the group and the group would never look gone)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap.poll()
            if not group_alive(pgid):
                return
            time.sleep(0.1)
    if reap is not None:
        reap.poll()
