"""Prompt templates: versioned text files in ``generators/templates/``, one per prompt.

Each file is YAML with a ``version`` and a ``template`` (``string.Template`` syntax:
``$name`` / ``${name}``, ``$$`` for a literal dollar sign). The ``name@version`` string
(``Template.ref``) is stored as ``template_version`` on every record the prompt produced,
so a dataset can be traced to the exact wording that made it. Change the wording, bump
the version.

    >>> t = load_template("responses")
    >>> t.ref
    'responses@1'
    >>> t.render(instruction="Name a colour.", input_block="")
    'Name a colour.'
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import read_yaml
from core.errors import InputError

TEMPLATE_DIR = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Template:
    """One prompt template: its name, version, text and any extra fields of its file."""

    name: str
    version: str
    text: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name@version``, the value stored in ``template_version``."""
        return f"{self.name}@{self.version}"

    def render(self, **values: Any) -> str:
        """Fill in ``$placeholders``; a missing value is an error, not a silent blank."""
        try:
            return string.Template(self.text).substitute(**values)
        except KeyError as exc:
            raise InputError(f"template {self.ref} needs a value for {exc}") from None


@functools.lru_cache(maxsize=None)
def load_template(name: str, directory: str | None = None) -> Template:
    """Load ``<directory>/<name>.yaml`` (default: the templates shipped with generators)."""
    path = Path(directory or TEMPLATE_DIR) / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"no prompt template named {name!r} ({path})")
    data = read_yaml(path)
    if "version" not in data or "template" not in data:
        raise InputError(f"template file {path} needs 'version' and 'template' keys")
    extra = {k: v for k, v in data.items() if k not in ("version", "template", "name")}
    return Template(name=name, version=str(data["version"]), text=str(data["template"]), extra=extra)
