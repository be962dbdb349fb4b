"""One way to load a config: a YAML file, ``--set key.path=value`` overrides, one model.

    config = load_config_file("configs/demo.yaml", PipelineConfig, overrides={"generate.target": 10})
    overrides = parse_sets(["generate.target=10", "teacher.model=gpt-4o-mini"])

Every config model (the pipeline, a teacher on its own, a training run, Lion) is read
through these functions, so a bad value always fails the same way: one ``InputError``
line naming the file, then each bad field by its dotted path, never a traceback and
never the rejected value itself (it could be a secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from core.errors import InputError

M = TypeVar("M")


def format_validation_error(err: ValidationError, source: str) -> str:
    """``"<source>: invalid config: a.b: problem; c: problem"``, one line for the CLI."""
    problems = []
    for e in err.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}")
    return f"{source}: invalid config: " + "; ".join(problems)


def first_problem(err: ValidationError) -> str:
    """The first problem of a validation error as ``field.path: message`` (for one line of a
    file, where one problem is enough to find it)."""
    e = err.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config is a mapping of settings, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "generate.target", 10)`` sets ``d["generate"]["target"] = 10``."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE (dotted key, YAML value), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError(f"--set {key.strip()}: the value is not valid YAML") from None
    return out


def validate(model: type[M] | Any, data: Any, source: str) -> M:
    """``data`` validated as ``model`` (a pydantic model or any type, e.g. an annotated
    union), an ``InputError`` naming each bad field otherwise."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)  # type: ignore[return-value]
        return TypeAdapter(model).validate_python(data)
    except ValidationError as err:
        raise InputError(format_validation_error(err, source)) from None


def env_overrides(variables: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{dotted key: value}`` for each environment variable of ``variables`` (name -> dotted
    key) that is set to a non-empty value (compose files cannot leave a key out, so an
    empty value means unset)."""
    environ = os.environ if environ is None else environ
    return {key: environ[name].strip() for name, key in variables.items() if environ.get(name, "").strip()}


def load_config_file(path: str | Path | None, model: type[M] | Any, *, overrides: dict[str, Any] | None = None,
                     section: str | None = None, env: Mapping[str, str] | None = None) -> M:
    """Read ``path`` (None: no file), then apply the environment variables of ``env`` (name ->
    dotted key), then ``overrides`` (dotted keys, None values ignored): file < environment <
    ``--set``. Validate the result as ``model``.

    ``section``: a file whose only top-level key is this name (``teacher:``) is read from
    inside it, so a section can live in a file of its own."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    if section and set(data) == {section} and isinstance(data[section], dict):
        data = data[section]
    from_env = env_overrides(env or {})
    for dotted, value in from_env.items():
        set_dotted(data, dotted, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    source = str(path) if path is not None else "options"
    if from_env:
        source += " + " + ", ".join(name for name, key in (env or {}).items() if key in from_env)
    return validate(model, data, source)
