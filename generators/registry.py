"""Every generation method by name: its config model, its runner, and the work it starts from.

    method = METHODS["responses"]
    config = method.config(temperature=0.7)                    # ResponsesConfig
    runner = method.runner(instructions, config, run_name="r", run_id=run.id, batch_size=32)

This table is the one place a method name is looked up. The generate flow, its config
(``GenerateConfig.params`` is ``MethodParams``, a union discriminated by ``method``, so a
bad field fails at load time with its name and the Prefect UI's form shows each method's
own fields) and the CLI all read it. To add a method: write its module (an async step
function, a config model with a ``method: Literal[...]`` field, a runner), then add one
``Method`` row here and its config to ``MethodParams``.

``works_on`` says what the flow hands the runner:

- ``"seed_tasks"``: the seed tasks (and the machine tasks kept so far) of Self-Instruct;
- ``"evolvable"``: stored instructions to evolve (Evol-Instruct);
- ``"instructions"``: stored instructions to answer (responses, rationales).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from generators.evol_instruct import EvolInstructConfig, EvolRunner
from generators.rationales import RationalesConfig, RationalesRunner
from generators.responses import ResponsesConfig, ResponsesRunner
from generators.self_instruct import SelfInstructConfig, SelfInstructRunner

WorkKind = Literal["seed_tasks", "evolvable", "instructions"]


@dataclass(frozen=True)
class Method:
    """One generation method: what configures it, what runs it, what it starts from."""

    name: str
    config: type[BaseModel]
    runner: type[Any]  # a generators.common.Runner
    works_on: WorkKind
    makes_instructions: bool  # new instructions (then answered), not only answers to given ones


METHODS: dict[str, Method] = {
    m.name: m for m in (
        Method("self_instruct", SelfInstructConfig, SelfInstructRunner, "seed_tasks", True),
        Method("alpaca", SelfInstructConfig, SelfInstructRunner, "seed_tasks", True),
        Method("evol_instruct", EvolInstructConfig, EvolRunner, "evolvable", True),
        Method("responses", ResponsesConfig, ResponsesRunner, "instructions", False),
        Method("rationales", RationalesConfig, RationalesRunner, "instructions", False),
    )
}

MethodName = Literal["self_instruct", "alpaca", "evol_instruct", "responses", "rationales"]
"""The names of ``METHODS`` (a test checks the two agree)."""

MethodParams = Annotated[
    Union[SelfInstructConfig, EvolInstructConfig, ResponsesConfig, RationalesConfig],
    Field(discriminator="method"),
]
"""A method's config, chosen by its ``method`` field."""
