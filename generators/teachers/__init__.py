"""Teachers: one async interface (``base.Teacher``), four backends, and the request ledger.

    from generators.teachers import build_teacher
    teacher = build_teacher(config, store=Store(db), run_id=run.id)   # ledgered when a store is given

``build_teacher`` is the one factory: it maps a ``TeacherConfig`` (``config.py``) to its
backend. Backends are imported only when built, so a command that never starts vLLM or
loads torch does not pay for their imports.
"""

from __future__ import annotations

from typing import Any

from generators.teachers.base import Teacher
from generators.teachers.config import (
    OpenAIConfig,
    ScriptedConfig,
    TeacherConfig,
    TransformersConfig,
    VLLMConfig,
)


def build_teacher(config: TeacherConfig, store: Any = None, run_id: str | None = None, **ledger: Any) -> Teacher:
    """The teacher ``config`` describes; wrapped in the request ledger when ``store`` is given
    (``ledger`` holds extra ``LedgeredTeacher`` options)."""
    teacher: Teacher
    if isinstance(config, OpenAIConfig):
        from generators.teachers.openai_backend import OpenAITeacher

        teacher = OpenAITeacher(config.model, base_url=config.base_url, api_key=config.resolve_api_key(),
                                **config.client_args())
    elif isinstance(config, VLLMConfig):
        from generators.teachers.vllm_backend import VLLMTeacher

        teacher = VLLMTeacher(config, api_key=config.resolve_api_key())
    elif isinstance(config, TransformersConfig):
        from generators.teachers.transformers_backend import TransformersTeacher

        teacher = TransformersTeacher(model_path=config.model_path, model=config.model, device=config.device,
                                      dtype=config.dtype, batch_size=config.batch_size,
                                      num_threads=config.num_threads, defaults=config.defaults)
    elif isinstance(config, ScriptedConfig):
        from generators.teachers.scripted import ScriptedTeacher

        teacher = ScriptedTeacher(dict(config.script), model=config.model or "scripted",
                                  default=config.default_response, defaults=config.defaults)
    else:
        raise TypeError(f"not a teacher config: {type(config).__name__}")
    if store is not None:
        from generators.teachers.ledger import LedgeredTeacher

        teacher = LedgeredTeacher(teacher, store, run_id=run_id, **ledger)
    return teacher


def backend_modules(config: TeacherConfig) -> tuple[str, ...]:
    """The modules ``build_teacher`` imports for ``config``, heaviest first: a command imports
    them while a Prefect server it started still boots (``flows.server.ensure_api_ready``)."""
    if isinstance(config, OpenAIConfig):
        return ("generators.teachers.openai_backend",)
    if isinstance(config, VLLMConfig):
        return ("generators.teachers.vllm_backend",)
    if isinstance(config, TransformersConfig):
        return ("torch", "transformers", "generators.teachers.transformers_backend")
    return ()
