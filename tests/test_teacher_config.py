"""TeacherConfig: YAML loading, contradictions rejected at load time, build_teacher."""

from __future__ import annotations

import pytest

from generators.teachers.base import ChatRequest, SamplingParams
from generators.teachers import build_teacher
from generators.teachers.config import (
    TEACHER_CONFIGS,
    OpenAIConfig,
    ScriptedConfig,
    TransformersConfig,
    VLLMConfig,
    load_teacher_config,
    teacher_config,
)
from generators.teachers.ledger import LedgeredTeacher
from generators.teachers.openai_backend import OpenAITeacher
from core.errors import InputError


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("""
teacher:
  backend: openai
  model: gpt-4o-mini
  base_url: http://127.0.0.1:9/v1
  api_key_env: OPENAI_API_KEY
  concurrency: 32
  rpm: 500
  tpm: 200000
  defaults: {temperature: 0.7, max_tokens: 512, stop: ["###"]}
""")
    cfg = load_teacher_config(path)
    assert isinstance(cfg, OpenAIConfig)
    assert cfg.rpm == 500 and cfg.defaults == SamplingParams(temperature=0.7, max_tokens=512, stop=("###",))
    assert teacher_config(cfg.model_dump()) == cfg
    assert isinstance(teacher_config({}), TransformersConfig)  # no backend: the embedded default


@pytest.mark.parametrize("data, message", [
    ({"backend": "openai"}, "needs a model name"),
    ({"backend": "openai", "model": "m", "api_key_env": "A", "prefect_secret": "b"}, "not both"),
    ({"backend": "transformers", "base_url": "http://x/v1"}, "transformers.base_url: Extra inputs"),
    ({"backend": "transformers", "rpm": 10}, "transformers.rpm: Extra inputs"),
    ({"backend": "openai", "model": "m", "port": 8000}, "openai.port: Extra inputs"),
    ({"backend": "vllm", "base_url": "http://x/v1", "port": 8000}, "base_url .* or server options \\(port"),
    ({"backend": "openai", "model": "m", "device": "cpu"}, "openai.device: Extra inputs"),
    ({"backend": "openai", "model": "m", "script": {"a": "b"}}, "openai.script: Extra inputs"),
    ({"backend": "openai", "model": "m", "backoff_base_s": 10, "backoff_max_s": 1}, "backoff_base_s"),
    ({"backend": "openai", "model": "m", "concurency": 3}, "concurency"),
    ({"backend": "openai", "model": "m", "concurrency": 0}, "concurrency"),
    ({"backend": "grpc"}, "backend must be one of openai, vllm, transformers, scripted"),
    ({"backend": "openai", "model": "m", "token": "x"}, "api_key_env"),
])
def test_contradictions_are_rejected_at_load(data, message):
    with pytest.raises(InputError, match=message):
        teacher_config(data)


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("backend: openai\nmodel: [unclosed\n")
    with pytest.raises(InputError, match=r"bad.yaml:\d: not valid YAML"):
        load_teacher_config(path)


def test_every_field_is_documented():
    for model in TEACHER_CONFIGS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_build_teacher(fake_openai, store):
    cfg = OpenAIConfig(model="fake-model", base_url=fake_openai.url, concurrency=3,
                        defaults=SamplingParams(max_tokens=2))
    bare = build_teacher(cfg)
    assert isinstance(bare, OpenAITeacher) and bare.concurrency == 3
    ledgered = build_teacher(cfg, store=store, run_id="r")
    assert isinstance(ledgered, LedgeredTeacher) and ledgered.run_id == "r"
    done = ledgered.generate([ChatRequest.chat("a b c d")])[0]
    assert done.ok and done.truncated  # the default max_tokens=2 was applied
    assert ledgered.key(ChatRequest.chat("x")) == bare.key(ChatRequest.chat("x"))

    scripted = build_teacher(ScriptedConfig(script={"q": "a"}, default_response="?"))
    assert [d.text for d in scripted.generate([ChatRequest.chat("q"), ChatRequest.chat("z")])] == ["a", "?"]


def test_default_backend_is_the_embedded_teacher():
    from generators.teachers.transformers_backend import TransformersTeacher

    teacher = build_teacher(TransformersConfig())
    assert isinstance(teacher, TransformersTeacher) and teacher.model == "SmolLM2-135M-Instruct"
