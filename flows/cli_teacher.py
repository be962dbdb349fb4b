"""`distill teacher ...`: fetch the embedded teacher, ask a teacher one question.

    distill teacher pull                                  # convert SmolLM2 once, print its folder
    distill teacher ask "Name three primary colours."     # embedded teacher, greedy
    distill teacher ask "Hi" --config configs/teacher.yaml --db distillery.duckdb   # through the ledger
    distill teacher ask "Hi" --backend openai --model gpt-4o-mini --api-key-env OPENAI_API_KEY
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The teacher model: fetch the embedded one, ask any one a question.",
                  no_args_is_help=True)


@app.command()
def pull(cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default $DISTILL_CACHE "
                                                                "or ~/.cache/distillery).")) -> None:
    """Convert the embedded SmolLM2-135M-Instruct teacher (once) and print its folder."""
    from core.embedded import ensure_embedded_teacher

    typer.echo(str(ensure_embedded_teacher(cache_dir)))


@app.command()
def ask(
    prompt: str = typer.Argument(..., help="The user message (or, with --completion, the text to continue)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Teacher config YAML."),
    backend: Optional[str] = typer.Option(None, help="openai | vllm | transformers (overrides the config)."),
    model: Optional[str] = typer.Option(None, help="Model name (overrides the config)."),
    base_url: Optional[str] = typer.Option(None, help="API base URL (overrides the config)."),
    api_key_env: Optional[str] = typer.Option(None, help="Name of the env var holding the API key."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    max_tokens: int = typer.Option(64, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    logprobs: Optional[int] = typer.Option(None, help="Show the top-k logprobs of each token."),
    completion: bool = typer.Option(False, help="Use the text-completion API instead of chat."),
    db: Optional[Path] = typer.Option(None, help="Record the request in this database's ledger."),
) -> None:
    """Ask the teacher one question and print its answer."""
    from core.errors import TeacherError
    from generators.teachers import build_teacher
    from generators.teachers.base import ChatRequest
    from generators.teachers.config import load_teacher_config

    cfg = load_teacher_config(config, {"backend": backend, "model": model, "base_url": base_url,
                                       "api_key_env": api_key_env})
    store = None
    if db is not None:
        from storage.store import Store

        store = Store(db)
    teacher = build_teacher(cfg, store=store)
    params = dict(max_tokens=max_tokens, temperature=temperature, logprobs=logprobs)
    request = (ChatRequest.completion(prompt, **params) if completion
               else ChatRequest.chat(prompt, system=system, **params))
    try:
        done = teacher.generate([request])[0]
    finally:
        teacher.close()
    if not done.ok:
        raise TeacherError(f"the teacher did not answer: {done.error} (after {done.attempts} attempts)")
    typer.echo(done.text)
    if done.logprobs:
        for t in done.logprobs:
            alts = ", ".join(f"{tok!r}: {lp:.2f}" for tok, lp in t.top.items())
            typer.echo(f"  {t.token!r} {t.logprob:.3f}  [{alts}]", err=True)
    note = " (from the ledger)" if done.cached else ""
    typer.echo(f"[{done.finish_reason}, {done.completion_tokens} tokens, {done.latency_s or 0:.2f}s{note}]", err=True)
