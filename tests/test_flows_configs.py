"""Every shipped config loads; contradictions and typos are rejected at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import LionConfig, PipelineConfig, load_config, load_lion_config
from core.errors import InputError

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_there_are_example_configs():
    assert {p.name for p in CONFIGS} >= {"demo.yaml"}
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path: Path):
    # configs/lion*.yaml configure Lion's loop (flows/lion.py); the others, the pipeline.
    model, load = (LionConfig, load_lion_config) if path.name.startswith("lion") else (PipelineConfig, load_config)
    config = load(path)
    assert config.run_name
    # What runs.config stores round-trips into the same model.
    assert model.model_validate(config.model_dump(mode="json")) == config


def test_demo_config_is_the_embedded_job():
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    assert config.teacher.backend == "transformers"
    assert config.train.student == "prune" and config.train.method == "kd"  # the sweep's best (BENCHMARKS.md run 9)
    assert config.train.teacher == "embedded"  # the logits distilled are the data's teacher's
    # At least 40 held-out prompts (issue #15): the shipped file alone has 60.
    held_out = Path(__file__).resolve().parent.parent / config.train.eval.prompts_jsonl
    assert min(config.train.eval.max_prompts, sum(1 for line in held_out.open() if line.strip())) >= 40
    assert config.evaluate.before and not config.skip.train and not config.skip.evaluate


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("generate: {targt: 3}", "generate.targt: Extra inputs are not permitted"),
        ("generate: {target: 0}", "generate.target: Input should be greater than or equal to 1"),
        ("generate: {method: magic}", "generate.method"),
        ("teacher: {backend: openai, model: m, api_key_env: K}\ntrain: {method: kd}",
         "needs the teacher's logits"),
        ("teacher: {backend: vllm, model_path: /m/llama-8b}\ntrain: {method: kd, teacher: embedded}",
         "train.teacher 'embedded' is not the data's teacher (vllm llama-8b, weights /m/llama-8b)"),
        ("teacher: {backend: vllm, base_url: 'http://gpu:8000/v1', model: m}\ntrain: {method: jsd}",
         "the data's teacher (vllm m) has no local weights here"),
        ("skip: {train: true}", "there is no model to evaluate"),
        ("train: {method: distill}\ngenerate: {method: responses}", "trains on rationales"),
        ("train: {eval: {enabled: false}}", "train.eval.enabled is false"),
        ("run_name: 'a b'", "run_name"),
        ("curate: {sql: 'delete from samples'}", "curate.sql must be a SELECT"),
        ("teacher: {backend: openai, model: m, api_key: sk-123}", "must not be in a teacher config"),
    ],
)
def test_contradictions_are_rejected_with_the_field_named(tmp_path, text, message):
    with pytest.raises(InputError) as err:
        load_config(_write(tmp_path, text))
    assert message in str(err.value)
    assert "sk-123" not in str(err.value)


def test_the_logit_teacher_defaults_to_the_datas_teacher(tmp_path):
    """White-box KD reads train.teacher; unset, it is the generation teacher's local weights."""
    # API generation of an open model whose weights are here: the valid case the old check refused.
    config = load_config(_write(tmp_path, "teacher: {backend: openai, model: llama, model_path: /m/llama}\n"
                                          "train: {method: kd}"))
    assert config.train.teacher is None and config.teacher.weights == "/m/llama"
    config = load_config(_write(tmp_path, "teacher: {backend: vllm, model_path: /m/llama}\n"
                                          "train: {method: kd, teacher: /m/other, allow_other_teacher: true}"))
    assert config.train.teacher == "/m/other"  # explicitly wanted
    load_config(_write(tmp_path, "teacher: {backend: openai, model: m}\ntrain: {method: sft, student: /s}"))


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match=r"\.yaml:2: not valid YAML"):
        load_config(_write(tmp_path, "a: 1\n  b: [\n"))
    with pytest.raises(InputError, match="a config is a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_overrides_win_over_the_file(tmp_path):
    path = _write(tmp_path, "generate: {target: 5}")
    config = load_config(path, {"generate.target": 7, "run_name": "x1"})
    assert config.generate.target == 7 and config.run_name == "x1"


def test_safe_dump_has_no_secret_values():
    config = PipelineConfig.model_validate(
        {"teacher": {"backend": "openai", "model": "m", "api_key_env": "OPENAI_API_KEY"}, "train": {"teacher": None,
         "student": "/tmp/student"}}
    )
    dumped = config.safe_dump()
    assert dumped["teacher"]["api_key_env"] == "OPENAI_API_KEY"  # a variable's name, not a key


def test_the_model_is_a_prefect_form():
    """The flow parameter schema Prefect builds from the model (what the UI renders)."""
    from prefect.utilities.callables import parameter_schema

    def pipeline(config: PipelineConfig = PipelineConfig()) -> None: ...

    schema = parameter_schema(pipeline)
    assert "config" in schema.properties
    defs = schema.definitions
    assert "GenerateConfig" in defs
    assert defs["GenerateConfig"]["properties"]["target"]["description"].startswith("Number of KEPT")


def test_method_params_are_checked_by_the_method(tmp_path):
    with pytest.raises(InputError, match="generate.params.self_instruct.rouge_treshold: Extra inputs"):
        load_config(_write(tmp_path, "generate: {method: self_instruct, params: {rouge_treshold: 0.5}}"))
    with pytest.raises(InputError, match="n > 1 samples need temperature > 0"):
        load_config(_write(tmp_path, "generate: {params: {n: 2, temperature: 0}}"))
    with pytest.raises(InputError, match="params.method 'rationales' contradicts method 'responses'"):
        load_config(_write(tmp_path, "generate: {method: responses, params: {method: rationales}}"))


def test_teacher_from_the_environment_between_the_file_and_set(tmp_path, monkeypatch):
    """DISTILL_TEACHER_* (a worker pointed at a GPU server): file < environment < --set."""
    path = _write(tmp_path, "teacher: {backend: vllm, model_path: /m/x}\ntrain: {method: sft, teacher: embedded}")
    monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("DISTILL_TEACHER_MODEL", "")  # empty: unset (compose cannot leave a key out)
    with pytest.raises(InputError, match=r"DISTILL_TEACHER_BASE_URL: invalid config: .*base_url .* or server options"):
        (tmp_path / "sub").mkdir()
        load_config(_write(tmp_path / "sub", "teacher: {backend: vllm, port: 9000}"))
    config = load_config(path)
    assert (config.teacher.backend, config.teacher.base_url, config.teacher.model) == ("vllm", "http://vllm:8000/v1", None)
    assert load_config(path, {"teacher.base_url": "http://other/v1"}).teacher.base_url == "http://other/v1"
    monkeypatch.setenv("DISTILL_TEACHER_BACKEND", "vllm")
    assert PipelineConfig(train={"method": "sft", "teacher": "embedded"}).teacher.base_url == "http://vllm:8000/v1"



def test_curate_exports_every_format():
    """Every format storage exports can be asked for in curate.export_formats, and has a file name."""
    from typing import get_args

    from flows.config import CurateConfig
    from flows.curate import _EXPORT_NAMES
    from storage.datasets import EXPORT_FORMATS

    (formats,) = get_args(CurateConfig.model_fields["export_formats"].annotation)  # list[Literal[...]]
    assert set(get_args(formats)) == set(EXPORT_FORMATS) == set(_EXPORT_NAMES)
    assert CurateConfig(export_formats=["jsonl-step-by-step"]).export_formats == ["jsonl-step-by-step"]
