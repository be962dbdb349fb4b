"""Teacher configuration: one model per backend, chosen by ``backend``, behind YAML, CLI and UI.

    teacher:                          # configs/*.yaml
      backend: openai                 # openai | vllm | transformers | scripted (default transformers)
      model: gpt-4o-mini
      api_key_env: OPENAI_API_KEY     # the NAME of the variable; the key is never in a config
      concurrency: 32
      rpm: 500
      defaults: {temperature: 0.7, max_tokens: 512}

    teacher:
      backend: vllm                   # start a vLLM server on these weights...
      model_path: /models/llama-8b
      python: .venv-vllm/bin/python
    teacher:
      backend: vllm                   # ...or attach to one (model_path: where its weights are,
      base_url: http://gpu:8000/v1    #  for white-box distillation)

    config = load_teacher_config("configs/teacher.yaml")   # InputError naming each bad field
    teacher = build_teacher(config, store=Store(db))         # generators.teachers: the factory

``TeacherConfig`` is a union discriminated by ``backend``: each backend's options sit
beside it (``model_path``, ``device`` for transformers; ``python``, ``port`` for vllm;
``script`` for scripted) and a field of another backend is refused by name. A config
without ``backend`` is the embedded default teacher (transformers).

The API key is read when the teacher is built (from the environment variable or the
Prefect Secret block the config names) and handed to the HTTP client; it is never part
of the config, so it cannot reach the database, Prefect parameters or logs through it.
Validation errors never echo input values (``hide_input_in_errors``), for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from core.config import env_overrides, load_config_file, validate
from core.embedded import EMBEDDED, EMBEDDED_MODEL_NAME
from core.errors import TeacherError
from generators.teachers.base import SamplingParams

_SECRET_FIELDS = ("api_key", "key", "token", "secret", "password")


class _Teacher(BaseModel):
    """What every teacher has: a model name and default sampling params."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    model: str | None = Field(
        None, description="Model name sent to the API and hashed into ledger keys. Required for openai; "
        "default for local backends: the model folder's name.")
    defaults: SamplingParams = Field(
        default_factory=SamplingParams,
        description="Sampling params for every field a request leaves unset (the one layer of defaults: a "
        "method's own setting wins where it sets one, e.g. Self-Instruct's temperature 0.7).")

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

    @property
    def weights(self) -> str | None:
        """Where this teacher's weights are on this machine, as configs name them: a folder,
        'embedded', or None when they are not here (an API; a server we did not start).
        White-box distillation needs them; ``core.embedded.model_folder`` resolves them."""
        return None


class _HTTPTeacher(_Teacher):
    """A teacher behind an OpenAI-compatible HTTP API."""

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

    @model_validator(mode="after")
    def _http_consistent(self) -> "_HTTPTeacher":
        if self.api_key_env and self.prefect_secret:
            raise ValueError("set api_key_env or prefect_secret, not both")
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError("backoff_base_s is larger than backoff_max_s")
        return self

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

    def client_args(self) -> dict[str, Any]:
        """The HTTP client's settings, as ``OpenAITeacher`` takes them."""
        return dict(concurrency=self.concurrency, rpm=self.rpm, tpm=self.tpm, timeout_s=self.timeout_s,
                    max_retries=self.max_retries, backoff_base_s=self.backoff_base_s,
                    backoff_max_s=self.backoff_max_s, extra_body=self.extra_body, defaults=self.defaults,
                    http_client=self.http_client)


class OpenAIConfig(_HTTPTeacher):
    """Any OpenAI-compatible API: OpenAI, a vLLM/SGLang/llama.cpp/Ollama server you run."""

    backend: Literal["openai"] = Field("openai", description="openai: any OpenAI-compatible API.")
    model_path: str | None = Field(
        None, description="Where this model's weights are on this machine, if they are (an open model "
        "behind an API): lets white-box distillation use them. Never sent anywhere.")

    @model_validator(mode="after")
    def _needs_model(self) -> "OpenAIConfig":
        if not self.model:
            raise ValueError("backend openai needs a model name")
        return self

    @property
    def weights(self) -> str | None:
        return self.model_path


# Fields that only matter when distillery starts the vLLM server itself.
_SERVER_FIELDS = ("python", "host", "port", "dtype", "kv_cache_gib", "extra_args", "startup_timeout_s", "log_file")


class VLLMConfig(_HTTPTeacher):
    """A local vLLM server that distillery starts (and stops), or one already running (``base_url``)."""

    backend: Literal["vllm"] = Field("vllm", description="vllm: a local vLLM server.")
    model_path: str | None = Field(
        None, description="Model folder the server serves; default the embedded SmolLM2 teacher. With "
        "base_url: the folder of the weights that server serves (for white-box distillation).")
    python: str | None = Field(
        None, description="Python interpreter of the vLLM virtual environment; default $DISTILL_VLLM_PYTHON.")
    host: str = Field("127.0.0.1", description="Interface the started server listens on.")
    port: int | None = Field(None, ge=1, le=65535, description="Port of the started server; default a free one.")
    dtype: str = Field("bfloat16", description="--dtype passed to vLLM.")
    kv_cache_gib: int = Field(2, ge=1, description="VLLM_CPU_KVCACHE_SPACE (GiB of KV cache on CPU).")
    extra_args: list[str] = Field(default_factory=list, description="More api_server arguments, verbatim.")
    startup_timeout_s: float = Field(300.0, gt=0, description="How long to wait for /health.")
    log_file: str | None = Field(None, description="Server log; default a file in the cache folder.")

    @model_validator(mode="after")
    def _attach_or_start(self) -> "VLLMConfig":
        server = sorted(set(_SERVER_FIELDS) & self.model_fields_set)
        if self.base_url and server:
            raise ValueError(f"backend vllm: give base_url (attach to a running server) or server options "
                             f"({', '.join(server)}: start one), not both")
        return self

    @property
    def weights(self) -> str | None:
        if self.model_path:
            return self.model_path
        return None if self.base_url else EMBEDDED  # a server we did not start: weights unknown


class TransformersConfig(_Teacher):
    """An in-process Hugging Face model (the default: the embedded SmolLM2-135M-Instruct)."""

    backend: Literal["transformers"] = Field("transformers", description="transformers: an in-process model.")
    model_path: str | None = Field(
        None, description="Model folder; default the embedded SmolLM2-135M-Instruct (converted on demand).")
    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = float32 on CPU, bfloat16 on CUDA.")
    batch_size: int | None = Field(None, ge=1, description="Prompts per generate() call; default sized to memory.")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; default the cores this process may use.")

    @property
    def weights(self) -> str | None:
        return self.model_path or EMBEDDED


class ScriptedConfig(_Teacher):
    """Canned answers (tests, dry runs): a prompt -> answer table."""

    backend: Literal["scripted"] = Field("scripted", description="scripted: canned answers.")
    script: dict[str, str] = Field(default_factory=dict, description="Prompt (the last user message) -> answer.")
    default_response: str | None = Field(None, description="Answer for prompts the script does not name.")


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("backend", "transformers")
    return getattr(value, "backend", "transformers")


TeacherConfig = Annotated[
    Union[
        Annotated[OpenAIConfig, Tag("openai")],
        Annotated[VLLMConfig, Tag("vllm")],
        Annotated[TransformersConfig, Tag("transformers")],
        Annotated[ScriptedConfig, Tag("scripted")],
    ],
    Discriminator(_backend_of, custom_error_type="backend",
                  custom_error_message="backend must be one of openai, vllm, transformers, scripted"),
]
"""A teacher's config: ``OpenAIConfig | VLLMConfig | TransformersConfig | ScriptedConfig`` by ``backend``."""

TEACHER_CONFIGS: tuple[type[_Teacher], ...] = (OpenAIConfig, VLLMConfig, TransformersConfig, ScriptedConfig)
HTTPTeacherConfig = _HTTPTeacher
LOCAL_BACKENDS = ("transformers", "vllm")
"""Backends whose weights run on this machine (white-box distillation can use them)."""


TEACHER_ENV = {"DISTILL_TEACHER_BACKEND": "backend", "DISTILL_TEACHER_MODEL": "model",
               "DISTILL_TEACHER_BASE_URL": "base_url"}
"""Environment variables that set a teacher's fields (a worker pointed at a GPU server by
docker/gpu.env): over a config file's values, under ``--set`` and explicit run parameters."""


def default_teacher() -> TeacherConfig:
    """The teacher when none is given: the ``DISTILL_TEACHER_*`` variables if set, else the
    embedded default."""
    return validate(TeacherConfig, env_overrides(TEACHER_ENV), "DISTILL_TEACHER_* environment variables")


def teacher_config(data: Any, *, source: str = "teacher config") -> TeacherConfig:
    """``data`` (a mapping, optionally nested under ``teacher:``) as a teacher config;
    InputError naming each bad field."""
    if isinstance(data, dict) and set(data) == {"teacher"}:
        data = data["teacher"]
    return validate(TeacherConfig, data, source)


def load_teacher_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TeacherConfig:
    """A teacher config from YAML (a file of its own or with a top-level ``teacher:``)."""
    return load_config_file(path, TeacherConfig, overrides=overrides, section="teacher", env=TEACHER_ENV)


def teacher_label(config: TeacherConfig) -> str:
    """A short name for messages: the model, else the embedded model's or the backend's name."""
    if config.model:
        return config.model
    weights = getattr(config, "model_path", None)
    if weights:
        return Path(weights).name
    return EMBEDDED_MODEL_NAME if config.backend in LOCAL_BACKENDS else config.backend
