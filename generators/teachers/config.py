"""Teacher configuration: one typed, documented, validated model behind YAML, CLI and Prefect.

    teacher:                          # configs/*.yaml (the `teacher:` level is optional)
      backend: openai
      model: gpt-4o-mini
      api_key_env: OPENAI_API_KEY     # the NAME of the variable; the key is never in a config
      concurrency: 32
      rpm: 500
      defaults: {temperature: 0.7, max_tokens: 512}

    config = TeacherConfig.from_yaml("configs/teacher.yaml")
    teacher = build_teacher(config, store=Store(db), run_id=run.id)   # ledgered when a store is given

The API key is read when the teacher is built (from the environment variable or the
Prefect Secret block the config names) and handed to the HTTP client; it is never part
of the config, so it cannot reach the database, Prefect parameters or logs through it.
Validation errors never echo input values (``hide_input_in_errors``), for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from generators.teachers.base import SamplingParams, Teacher
from core.errors import InputError, TeacherError

_SECRET_FIELDS = ("api_key", "key", "token", "secret", "password")


class VLLMOptions(BaseModel):
    """How distillery starts a local vLLM server (backend ``vllm`` without ``base_url``)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    python: str | None = Field(
        None, description="Python interpreter of the vLLM virtual environment; default $DISTILL_VLLM_PYTHON.")
    model_dir: str | None = Field(
        None, description="Model folder to serve; default the embedded SmolLM2 teacher (converted on demand).")
    host: str = Field("127.0.0.1", description="Interface the server listens on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port; default a free one.")
    dtype: str = Field("bfloat16", description="--dtype passed to vLLM.")
    kv_cache_gib: int = Field(2, ge=1, description="VLLM_CPU_KVCACHE_SPACE (GiB of KV cache on CPU).")
    extra_args: list[str] = Field(default_factory=list, description="More api_server arguments, verbatim.")
    startup_timeout_s: float = Field(300.0, gt=0, description="How long to wait for /health.")
    log_file: str | None = Field(None, description="Server log; default a file in the cache folder.")


class TransformersOptions(BaseModel):
    """The in-process Hugging Face teacher (backend ``transformers``)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    model_path: str | None = Field(
        None, description="Model folder; default the embedded SmolLM2-135M-Instruct (converted on demand).")
    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = float32 on CPU, bfloat16 on CUDA.")
    batch_size: int | None = Field(None, ge=1, description="Prompts per generate() call; default sized to memory.")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; default the cores this process may use.")


class TeacherConfig(BaseModel):
    """Which teacher to use and how hard to push it."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    backend: Literal["openai", "vllm", "transformers", "scripted"] = Field(
        "transformers", description="openai: any OpenAI-compatible API; vllm: a local vLLM server; "
        "transformers: in-process model; scripted: canned answers (tests, dry runs).")
    model: str | None = Field(
        None, description="Model name sent to the API and hashed into ledger keys. Required for openai; "
        "default for local backends: the model folder's name.")
    base_url: str | None = Field(
        None, description="API base URL, e.g. http://host:8000/v1. openai: default api.openai.com; "
        "vllm: attach to this running server instead of starting one.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (the key itself is never configured).")
    prefect_secret: str | None = Field(
        None, description="Name of a Prefect Secret block holding the API key (instead of api_key_env).")
    concurrency: int = Field(16, ge=1, description="Requests on the wire at once.")
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit (evenly spaced).")
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit (prompt + completion).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout, per attempt.")
    max_retries: int = Field(5, ge=0, description="Retries after the first attempt (429/5xx/timeouts/drops).")
    backoff_base_s: float = Field(0.5, gt=0, description="First backoff delay; doubles per retry, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest backoff delay (Retry-After is honoured as sent).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra JSON fields for every request (e.g. vLLM's top_k).")
    http_client: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="HTTP stack under the openai client: aiohttp (the SDK's aiohttp backend; less "
        "client CPU per request at high concurrency, see BENCHMARKS.md) or httpx (the SDK's default).")
    defaults: SamplingParams = Field(
        default_factory=SamplingParams, description="Sampling params for fields a request leaves unset.")
    vllm: VLLMOptions | None = Field(None, description="vllm backend: how to start the server.")
    transformers: TransformersOptions | None = Field(None, description="transformers backend options.")
    script: dict[str, str] | None = Field(None, description="scripted backend: prompt -> answer.")
    default_response: str | None = Field(None, description="scripted backend: answer for unscripted prompts.")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _SECRET_FIELDS:
                if name in data:
                    raise ValueError(
                        f"'{name}' must not be in a teacher config: put the key in an environment "
                        "variable and name it in api_key_env (or use prefect_secret)")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TeacherConfig":
        problems = []
        if self.api_key_env and self.prefect_secret:
            problems.append("set api_key_env or prefect_secret, not both")
        if self.backoff_base_s > self.backoff_max_s:
            problems.append("backoff_base_s is larger than backoff_max_s")
        if self.backend != "vllm" and self.vllm is not None:
            problems.append(f"vllm options given but backend is {self.backend!r}")
        if self.backend != "transformers" and self.transformers is not None:
            problems.append(f"transformers options given but backend is {self.backend!r}")
        if self.backend != "scripted" and (self.script is not None or self.default_response is not None):
            problems.append(f"script/default_response given but backend is {self.backend!r}")
        if self.backend == "openai" and not self.model:
            problems.append("backend openai needs a model name")
        if self.backend == "vllm" and self.base_url and self.vllm is not None:
            problems.append("backend vllm: give base_url (attach to a running server) or vllm options "
                            "(start one), not both")
        if self.backend in ("transformers", "scripted"):
            remote = [n for n in ("base_url", "api_key_env", "prefect_secret", "rpm", "tpm")
                      if getattr(self, n) is not None]
            if remote:
                problems.append(f"backend {self.backend} runs in-process: {', '.join(remote)} make no sense")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "teacher config") -> "TeacherConfig":
        """Validate ``data`` (optionally nested under ``teacher:``); InputError naming each problem."""
        if isinstance(data, dict) and set(data) == {"teacher"}:
            data = data["teacher"]
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping of teacher settings")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise InputError(f"{source}: {_describe(err)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TeacherConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise InputError(f"{path}: no such teacher config") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise InputError(f"{path}{where}: not valid YAML") from None
        return cls.from_dict(data, source=str(path))

    # -- secrets -------------------------------------------------------------------------------
    def resolve_api_key(self) -> str | None:
        """The API key from the named environment variable or Prefect Secret block (or None)."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise TeacherError(f"environment variable {self.api_key_env} (api_key_env) is not set")
            return value
        if self.prefect_secret:
            try:
                from prefect.blocks.system import Secret

                value = Secret.load(self.prefect_secret).get()
            except Exception as err:  # never echo what was loaded
                raise TeacherError(
                    f"cannot load Prefect Secret block {self.prefect_secret!r}: {type(err).__name__}") from None
            return str(value)
        return None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def build_teacher(config: TeacherConfig, store: Any = None, run_id: str | None = None) -> Teacher:
    """The teacher a config describes; wrapped in the request ledger when ``store`` is given."""
    teacher: Teacher
    common = dict(concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm, timeout_s=config.timeout_s,
                  max_retries=config.max_retries, backoff_base_s=config.backoff_base_s,
                  backoff_max_s=config.backoff_max_s, extra_body=config.extra_body, defaults=config.defaults,
                  http_client=config.http_client)
    if config.backend == "openai":
        from generators.teachers.openai_backend import OpenAITeacher

        assert config.model is not None
        teacher = OpenAITeacher(config.model, base_url=config.base_url, api_key=config.resolve_api_key(),
                                **common)
    elif config.backend == "vllm":
        from generators.teachers.vllm_backend import VLLMTeacher

        teacher = VLLMTeacher(model=config.model, base_url=config.base_url, options=config.vllm or VLLMOptions(),
                              api_key=config.resolve_api_key(), **common)
    elif config.backend == "transformers":
        from generators.teachers.transformers_backend import TransformersTeacher

        opts = config.transformers or TransformersOptions()
        teacher = TransformersTeacher(model_path=opts.model_path, model=config.model, device=opts.device,
                                      dtype=opts.dtype, batch_size=opts.batch_size, num_threads=opts.num_threads,
                                      defaults=config.defaults)
    else:
        from generators.teachers.scripted import ScriptedTeacher

        teacher = ScriptedTeacher(dict(config.script or {}), model=config.model or "scripted",
                                  default=config.default_response, defaults=config.defaults)
    if store is not None:
        from generators.teachers.ledger import LedgeredTeacher

        teacher = LedgeredTeacher(teacher, store, run_id=run_id)
    return teacher
