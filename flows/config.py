"""The pipeline config: one YAML file, validated once, the same model behind the CLI and the UI.

    config = load_config("configs/demo.yaml")     # raises InputError naming the problem
    pipeline(config)                             # the flow's parameter is this model

Every field has a description (the Prefect UI shows it under the form field). Values that
contradict each other (a white-box training method with an API teacher, evaluation with
nothing to evaluate, ...) are rejected here, at load time, not an hour into a run.

The teacher, filter and training sections are the models their own packages define
(``generators.teachers.config.TeacherConfig``, ``filters.config.FiltersConfig``,
``training.config.TrainConfig``); this module only composes them and checks how they fit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from core.config import load_config_file
from core.errors import InputError
from filters.config import FilterConfig as FiltersConfig
from generators.judge import JudgeConfig
from generators.lion import LionParams
from generators.registry import METHODS, Method, MethodName, MethodParams
from generators.responses import ResponsesConfig
from core.embedded import same_weights
from generators.teachers.config import (
    TEACHER_ENV,
    TeacherConfig,
    TransformersConfig,
    VLLMConfig,
    default_teacher,
    teacher_label,
)
from storage.seeds import LION_HELDOUT_FILE, LION_POOL_FILE
from training.config import TrainConfig
from training.student import tokenizers_differ

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value.replace("{scheduled}", "x")):
        raise ValueError(
            f"{what} {value!r} must be 1-100 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


class GenerateConfig(_Section):
    """What to generate, how much, and when to give up."""

    method: MethodName = Field(
        "responses",
        description="Generation method: self_instruct | alpaca | evol_instruct (new instructions, "
        "each answered by the teacher) | responses (answer stored instructions) | rationales "
        "(chain-of-thought answers). generators/registry.py lists them.",
    )
    target: int = Field(
        100, ge=1, description="Number of KEPT samples to reach (after the inline filters), not attempts."
    )
    batch_size: int = Field(
        32, ge=1, le=2048,
        description="Teacher requests per Prefect task. Tens of requests per task keep Prefect's "
        "overhead negligible; each finished batch is persisted at once.",
    )
    max_concurrent_batches: int = Field(
        4, ge=1, le=256,
        description="Batches in flight at once. batch_size x this should be at least the teacher's "
        "concurrency, so the teacher is never idle while a batch is being stored.",
    )
    max_attempts: int | None = Field(
        None, ge=1,
        description="Most teacher requests this run may make (cached ledger hits do not count). "
        "Default: 4 x target. The run stops with a summary when it is spent.",
    )
    token_budget: int | None = Field(
        None, ge=1,
        description="Most teacher tokens (prompt + completion) this run may spend; None = no limit.",
    )
    max_failure_rate: float = Field(
        0.5, ge=0.0, le=1.0,
        description="A run that stops short of its target with more than this share of the requests it sent "
        "failed (or with nothing kept and failures) ends Failed, naming the teacher's errors; re-running it "
        "resumes once the teacher is back. A run that reaches its target never fails for failures.",
    )
    instructions_file: str | None = Field(
        None,
        description="For responses/rationales/evol_instruct: a JSONL of instructions ({instruction, input?} "
        "or {question, answer?}) ingested before the run; with it, only these are worked on.",
    )
    instructions_sql: str | None = Field(
        None,
        description="For responses/rationales/evol_instruct: a SELECT returning instruction ids (column "
        "'id') to work on. Default: every instruction that has no sample yet from this teacher.",
    )
    params: MethodParams = Field(
        default_factory=ResponsesConfig,
        description="The method's own parameters (its config model in generators/: e.g. n and temperature "
        "for responses, rounds for evol_instruct, num_samples for rationales). Sampling fields a method "
        "leaves unset come from teacher.defaults.",
    )
    filters: FiltersConfig = Field(
        default_factory=lambda: FiltersConfig(minhash=None),
        description="Filters applied inline to each batch, so target counts kept samples. Default: "
        "exact + quality (cheap, per sample); MinHash near-duplicates against the whole store run "
        "in curate (set filters.minhash here to drop them while generating).",
    )

    @model_validator(mode="before")
    @classmethod
    def _params_of_method(cls, data: Any) -> Any:
        """``params`` is the chosen method's config: its ``method`` is ``generate.method``."""
        if not isinstance(data, dict):
            return data
        method = data.get("method", "responses")
        params = data.get("params")
        if isinstance(params, BaseModel):
            params = params.model_dump(exclude_unset=True) | {"method": getattr(params, "method", method)}
        params = dict(params or {})
        if params.setdefault("method", method) != method:
            raise ValueError(f"params.method {params['method']!r} contradicts method {method!r}")
        return {**data, "method": method, "params": params}

    @property
    def attempts_cap(self) -> int:
        """The effective request budget (``max_attempts`` or 4 x target)."""
        return self.max_attempts or 4 * self.target

    @property
    def spec(self) -> Method:
        """The method's row in the registry."""
        return METHODS[self.method]


class _JudgeStep(_Section):
    """What both LLM-judge steps of curate have: a switch, the judge's knobs, its model."""

    enabled: bool = Field(True, description="Run the step (false keeps the section but skips the step).")
    params: JudgeConfig = Field(
        default_factory=JudgeConfig,
        description="The judge's own knobs: request_format, system_prompt, temperature, retry_temperature, "
        "max_tokens, max_retries, the score scale min_score/max_score, and for pairwise verdicts "
        "verdict_order (explanation_first | scores_first) and swap_positions.",
    )
    teacher: TeacherConfig | None = Field(
        None,
        description="The judge model. Default: the pipeline's teacher (the top-level teacher section; the "
        "embedded default teacher when curate runs without one).",
    )


class CurateJudgeConfig(_JudgeStep):
    """The LLM judge in curate: the teacher scores each sample 1-10 (``generators.judge``).

    Samples scoring below ``min_score`` get a ``filter_decisions`` row with filter 'judge',
    kept false, reason 'low_score'; a verdict that never parses after the judge's retries
    gets kept false, reason 'judge_failed'. Either way the dataset leaves them out.
    """

    min_score: float = Field(
        7.0,
        description="Keep a sample whose judge score is at least this (on the judge's scale, "
        "params.min_score..params.max_score, default 1-10); below it: reason 'low_score'.",
    )
    max_samples: int | None = Field(
        None, ge=1,
        description="Most samples judged in one curate run (oldest first); None = all not judged yet. "
        "The rest wait for a later run and, with require_verdict, stay out of this version.",
    )
    batch_size: int = Field(
        32, ge=1, le=1024,
        description="Samples per judge task (one Prefect task, one judge_single call); each finished "
        "batch's decisions are stored at once.",
    )
    require_verdict: bool = Field(
        True,
        description="The default dataset selection only takes samples the judge kept; samples not "
        "judged yet (beyond max_samples) stay out until judged. False: unjudged samples go in.",
    )

    @model_validator(mode="after")
    def _threshold_on_scale(self) -> "CurateJudgeConfig":
        lo, hi = self.params.min_score, self.params.max_score
        if not lo <= self.min_score <= hi:
            raise ValueError(f"judge.min_score {self.min_score} is outside the judge's score scale {lo}..{hi}")
        return self


class CurateCompareConfig(_JudgeStep):
    """The pairwise LLM judge in curate: which of two sources answers the same instructions
    better (``generators.judge.ajudge_pairwise``; Zheng et al., and Lion's discrimination).

    A source is the samples stored under one ``samples.teacher_model`` name: two teachers,
    or a teacher and a student checkpoint whose answers were stored by a generate run with
    ``teacher: {backend: transformers, model_path: <checkpoint>, model: <name>}``. Each
    instruction answered by both is one pair (the earliest stored answer of each); the judge
    scores it in both orders (``params.swap_positions``) and the averages land in
    ``pairwise_judgments``, one row per pair and judge model, failed verdicts included, so a
    re-run judges and pays for nothing twice. The comparison does not change the dataset.
    """

    a: str = Field(
        min_length=1,
        description="Source A: the samples.teacher_model whose answers are shown as answer A "
        "(e.g. the teacher, 'gpt-4o-mini').",
    )
    b: str = Field(
        min_length=1,
        description="Source B: the samples.teacher_model of the answers compared with A's "
        "(e.g. a student checkpoint's answers, stored under the name its teacher config's model gave them).",
    )
    max_pairs: int | None = Field(
        None, ge=1,
        description="Most pairs judged in one curate run (oldest instructions first); None = every "
        "pair this judge has not judged yet. The rest wait for a later run.",
    )
    batch_size: int = Field(
        16, ge=1, le=1024,
        description="Pairs per judge task (one Prefect task, one ajudge_pairwise call: two requests a "
        "pair with swap_positions); each finished batch's verdicts are stored at once.",
    )

    @model_validator(mode="after")
    def _two_sources(self) -> "CurateCompareConfig":
        if self.a == self.b:
            raise ValueError(f"compare.a and compare.b both name {self.a!r}: name two different "
                             "samples.teacher_model values")
        return self


class CurateConfig(_Section):
    """Which filters to run over stored samples, and the dataset version to freeze."""

    dataset: str = Field("distilled", description="Dataset name; each curate run freezes a new version.")
    filters: FiltersConfig = Field(
        default_factory=FiltersConfig,
        description="Filters run over samples not yet judged; every decision is recorded.",
    )
    sql: str | None = Field(
        None,
        description="SELECT over sample_view choosing the dataset rows. Default: every sample no "
        "filter dropped (optionally only this run's).",
    )
    only_this_run: bool = Field(
        False, description="Restrict the default selection to samples produced by this run name."
    )
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of rows held out as the eval split.")
    split_seed: int = Field(0, description="Seed of the train/eval split.")
    min_rows: int = Field(1, ge=0, description="Refuse to freeze a version with fewer kept rows than this.")
    export_formats: list[Literal["parquet", "jsonl-chat", "jsonl-prompt", "jsonl-step-by-step", "hf"]] = Field(
        default_factory=lambda: ["jsonl-chat"],
        description="Formats to export the new version to: parquet, jsonl-chat ({messages}), jsonl-prompt "
        "({prompt, completion}) (in both, a rationale row answers '<rationale> So the answer is <answer>.'), "
        "jsonl-step-by-step (distilling step-by-step's tasks: {task, input: 'predict: ...' or "
        "'explain: ...', output}), hf (datasets.save_to_disk).",
    )
    export_dir: str = Field("exports", description="Folder exports go to (<dir>/<name>/v<version>/<format>).")
    judge: CurateJudgeConfig | None = Field(
        None,
        description="LLM judge over the samples the filters kept and no judge scored yet; its "
        "decisions (filter 'judge') drop low-scored samples from the dataset. None: no judge.",
    )
    compare: CurateCompareConfig | None = Field(
        None,
        description="Pairwise LLM judge comparing two sources' answers to the same instructions "
        "(compare.a vs compare.b, by samples.teacher_model), both orders averaged, stored in "
        "pairwise_judgments; the dataset is not affected. None: no comparison.",
    )
    emit_event: bool = Field(True, description="Emit distill.dataset.ready when a version is frozen.")
    min_new_rows_for_event: int = Field(
        1, ge=0,
        description="Only emit distill.dataset.ready (which triggers retraining) when the new "
        "version has at least this many rows the previous version did not.",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        return _check_name(v, "dataset name")

    @field_validator("sql")
    @classmethod
    def _select_only(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\s*(select|with)\b", v, re.I):
            raise ValueError("curate.sql must be a SELECT (or WITH ... SELECT) statement")
        return v


class EvaluateConfig(_Section):
    """Which models the pipeline's evaluation step compares (how: ``train.eval``)."""

    before: bool = Field(True, description="Also evaluate the untrained student (the 'before' row).")
    teacher: bool = Field(False, description="Also evaluate the teacher itself (slow for big teachers).")
    model_path: str | None = Field(
        None, description="Evaluate this model folder instead of the one the train step produced."
    )


class SkipConfig(_Section):
    """Steps to skip; a skipped step's output is taken from the store instead."""

    seeds: bool = Field(False, description="Do not ingest the seed tasks file.")
    generate: bool = Field(False, description="Do not generate; curate what the store already holds.")
    curate: bool = Field(False, description="Do not freeze a new dataset version; train on the latest.")
    train: bool = Field(False, description="Do not train (evaluate.model_path then names the model).")
    evaluate: bool = Field(False, description="Do not evaluate.")


class PipelineConfig(_Section):
    """seeds -> generate -> curate -> train -> evaluate, as one YAML file."""

    run_name: str = Field(
        "default",
        description="Name of this run. Re-running the same name resumes it: done requests are not "
        "paid again and no row is stored twice. '{scheduled}' in it becomes the flow run's scheduled "
        "start (a deployment's 'nightly-{scheduled}': each scheduled run adds new data).",
    )
    db: str | None = Field(
        None, description="DuckDB file (default: $DISTILL_DB, else ./distillery.duckdb)."
    )
    seeds: str | None = Field(
        None, description="Seed tasks JSONL (self-instruct format). Default: the shipped seed tasks."
    )
    teacher: TeacherConfig = Field(
        default_factory=default_teacher,
        description="The teacher model and how to reach it (default: DISTILL_TEACHER_* if set, else the "
        "embedded SmolLM2).",
    )
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Generation step.")
    curate: CurateConfig = Field(default_factory=CurateConfig, description="Curation step.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training step.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation step.")
    skip: SkipConfig = Field(default_factory=SkipConfig, description="Steps to skip.")

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        return _check_name(v, "run_name")

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineConfig":
        if not self.skip.train and not self.skip.generate:
            problem = logit_teacher_problem(self.teacher, self.train)
            if problem:
                raise ValueError(problem)
        if not self.skip.evaluate and not self.train.eval.enabled:
            raise ValueError(
                "train.eval.enabled is false but skip.evaluate is not set: say one thing "
                "(skip.evaluate: true to not evaluate)"
            )
        if self.skip.train and not self.skip.evaluate and not self.evaluate.model_path:
            raise ValueError(
                "skip.train is set but evaluate is not skipped and evaluate.model_path is empty: "
                "there is no model to evaluate"
            )
        if (not self.skip.train and self.train.method == "distill" and not self.skip.generate
                and self.generate.method != "rationales"):
            raise ValueError(
                "train.method 'distill' trains on rationales: set generate.method to 'rationales' "
                f"(it is {self.generate.method!r}) or skip generate"
            )
        return self

    def safe_dump(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets left out (what `runs.config` stores)."""
        return _without_secrets(self.model_dump(mode="json"))


def logit_teacher_problem(teacher: TeacherConfig, train: TrainConfig) -> str | None:
    """Why ``train`` cannot take the logits (or prune the student) of the model ``teacher``
    generates the data with, or None. The same rule training applies to a dataset's lineage
    (training/train.py ``logit_teacher``), checked here at load time, before any work."""
    needs_weights = train.white_box or train.student == "prune"
    if not needs_weights:
        return None
    data_weights = teacher.weights
    label = f"{teacher.backend} {teacher_label(teacher)}"
    if train.teacher is None:
        if data_weights is None and train.white_box:
            return (f"train.method {train.method!r} needs the teacher's logits, but the data's teacher ({label}) "
                    "has no local weights here: set teacher.model_path to where its weights are, or "
                    "train.teacher (with train.allow_other_teacher: true), or train.method 'sft'")
        if data_weights is None:
            return (f"train.student 'prune' cuts the student from the teacher's weights, but the data's teacher "
                    f"({label}) has none here: set train.teacher (e.g. 'embedded') or train.student to a folder")
        logit_weights = data_weights
    elif train.white_box and not train.allow_other_teacher and not same_weights(train.teacher, data_weights):
        return (f"train.teacher {train.teacher!r} is not the data's teacher ({label}, weights "
                f"{data_weights or 'not on this machine'}): white-box distillation would distil another model's "
                "logits; set train.teacher to the data's weights (or leave it unset), or say it is wanted with "
                "train.allow_other_teacher: true")
    else:
        logit_weights = train.teacher
    if train.white_box and train.student not in ("prune",) and not train.student.startswith("prune:"):
        different = tokenizers_differ(train.student, logit_weights)
        if different:
            return (f"train.student {train.student!r} and the logit teacher {logit_weights!r} have different "
                    f"tokenizers ({different}): white-box distillation needs a shared tokenizer")
    return None


# -- Lion (flows/lion.py) ----------------------------------------------------------------


class LionPoolsConfig(_Section):
    """Where Lion's two pools start: JSONL instruction files (``{"instruction", "input"?}``
    per line, read by ``storage.seeds.parse_instructions_file``). Generated instructions
    join both pools as the loop goes."""

    train: str = Field(str(LION_POOL_FILE), description="The Train Pool's starting instructions: the teacher "
                       "answers them and the student is fine-tuned on the answers. Default: the shipped "
                       "storage/seeds/lion_pool.jsonl.")
    cache: str | None = Field(None, description="The Cache Pool's starting instructions: the referee compares "
                              "the teacher's and the student's answers to them. Default: the train file (the "
                              "paper starts both pools from the same instructions).")


class LionHeldOutConfig(_Section):
    """The held-out evaluation after each iteration's training (training/evaluate.py):
    every model answers the same prompts greedily; ROUGE-L against the teacher's greedy
    answers (asked through the ledger) and, with a local teacher, KL(teacher || student)."""

    enabled: bool = Field(True, description="Evaluate each iteration's student on the held-out prompts.")
    file: str = Field(str(LION_HELDOUT_FILE), description="JSONL of held-out prompts ({instruction, input?, "
                      "response?}); keep them out of the pools. Default: storage/seeds/lion_heldout.jsonl.")
    size: int | None = Field(16, ge=1, description="Use the first this many prompts (None: all).")
    max_new_tokens: int = Field(64, ge=1, description="Greedy answer length, teacher's and students'.")
    batch_size: int = Field(8, ge=1, description="Prompts generated per batch.")
    before: bool = Field(True, description="At iteration 1, also evaluate the student before any training "
                         "(label 'student (before)').")


def _student_backend(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("backend", "transformers")
    return getattr(value, "backend", "transformers")


StudentBackendConfig = Annotated[
    Union[Annotated[TransformersConfig, Tag("transformers")], Annotated[VLLMConfig, Tag("vllm")]],
    Discriminator(_student_backend, custom_error_type="backend",
                  custom_error_message="the student answers through backend transformers or vllm"),
]
"""How the student answers: an in-process transformers model (batched) or a vLLM server
started from its checkpoint; the loop fills in the model (each iteration's checkpoint)."""


class LionConfig(_Section):
    """Lion's adversarial loop (flows/lion.py): who teaches, judges, generates and learns,
    the pools, the held-out evaluation and the loop's knobs, as one YAML file."""

    run_name: str = Field("lion", description="Name of this run. Re-running it resumes: finished iterations "
                          "and steps are skipped, judged pairs are not judged again, paid requests are served "
                          "from the ledger. '{scheduled}' in it becomes the flow run's scheduled start.")
    db: str | None = Field(None, description="DuckDB file (default: $DISTILL_DB, else ./distillery.duckdb).")
    iterations: int = Field(1, ge=1, description="Iterations the run should have finished when it ends "
                            "(distill lion --iterations N): a run with 1 finished goes on with 2..N.")
    teacher: TeacherConfig = Field(default_factory=default_teacher, description="The teacher: answers the Train "
                                   "and Cache Pools and the held-out prompts (default: the embedded SmolLM2).")
    referee: TeacherConfig | None = Field(None, description="The referee that scores teacher against student "
                                          "(the pairwise judge). Default: the teacher.")
    generator: TeacherConfig | None = Field(None, description="The model that writes new instructions from hard "
                                            "and easy ones. Default: the teacher.")
    student: StudentBackendConfig = Field(
        default_factory=TransformersConfig,
        description="How the student answers the Cache Pool: backend transformers (in-process, batched; "
        "batch_size, device, dtype, num_threads) or vllm (a server started from the checkpoint; python, port, "
        "dtype, kv_cache_gib, extra_args, startup_timeout_s). model_path and model are the loop's: each "
        "iteration's checkpoint, named lion-<run_name>-student-it<i>.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(output_dir="checkpoints/lion"),
        description="The student's training each iteration (training.config.TrainConfig): method sft, or a KD "
        "preset when the teacher is local; student 'prune' (the teacher with layers removed) or a folder for "
        "iteration 1, the previous iteration's checkpoint after that. Checkpoints go to "
        "<output_dir>/<run_name>/it<i>.")
    pools: LionPoolsConfig = Field(default_factory=LionPoolsConfig, description="The pools' starting files.")
    heldout: LionHeldOutConfig = Field(default_factory=LionHeldOutConfig,
                                       description="Held-out evaluation after each iteration's training.")
    loop: LionParams = Field(default_factory=LionParams, description="The loop's knobs (generators/lion.py): "
                             "system prompt, temperatures, answer length, the referee's judge settings, the "
                             "hard threshold, hard/easy counts per iteration, generation filters.")
    answer_batch_size: int = Field(32, ge=1, le=4096, description="Answers per Prefect task (teacher and "
                                   "student), and generation requests per task; each task stores its records.")
    judge_batch_size: int = Field(16, ge=1, le=2048, description="Pairs per referee task (two requests a pair); "
                                  "each task's verdicts are stored when it ends, so a crash loses at most one.")

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        return _check_name(v, "run_name")

    @model_validator(mode="after")
    def _consistent(self) -> "LionConfig":
        fixed = [name for name in ("model_path", "model", "base_url") if getattr(self.student, name, None)]
        if fixed:
            raise ValueError(f"student.{fixed[0]} is set by the loop (each iteration's checkpoint, served as "
                             "lion-<run_name>-student-it<i>): leave it out")
        if self.train.method == "distill":
            raise ValueError("train.method 'distill' trains on rationales; Lion's student imitates answers: "
                             "use sft (or a KD preset with a local teacher)")
        problem = logit_teacher_problem(self.teacher, self.train)
        if problem:
            raise ValueError(problem)
        return self

    def safe_dump(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets left out (what `runs.config` stores)."""
        return _without_secrets(self.model_dump(mode="json"))


def load_lion_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> LionConfig:
    """Read and validate one Lion YAML file (None: defaults); ``overrides`` (dotted keys) win."""
    return load_config_file(path, LionConfig, overrides=overrides,
                            env={name: f"teacher.{key}" for name, key in TEACHER_ENV.items()})


_SECRET_KEYS = re.compile(r"(api_?key|token|secret|password)$", re.I)


def _without_secrets(value: Any) -> Any:
    """Drop values whose key looks like a secret (env var *names* ending in _env are kept)."""
    if isinstance(value, dict):
        return {
            k: ("***" if _SECRET_KEYS.search(k) and v else _without_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate one pipeline YAML file (None: defaults); ``overrides`` (dotted keys) win."""
    return load_config_file(path, PipelineConfig, overrides=overrides,
                            env={name: f"teacher.{key}" for name, key in TEACHER_ENV.items()})
