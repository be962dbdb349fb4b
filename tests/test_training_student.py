"""Students pruned from a teacher, tokenizer checks, and the TrainConfig contract."""

from __future__ import annotations

import json
from typing import get_args

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from core.errors import DistillError, InputError
from training.config import PRESETS, WHITE_BOX_METHODS, Method, TrainConfig
from training.student import STUDENT_MARKER, build_student, check_same_tokenizer, select_layers
from training.testing import tiny_llama


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("models") / "teacher4", num_layers=4, seed=1)


def test_select_layers_forms():
    assert select_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert select_layers(30, 1 / 3) == select_layers(30, 10)
    assert select_layers(6, "every_other") == [0, 2, 4]
    assert select_layers(6, [5, 1]) == [1, 5]
    with pytest.raises(DistillError):
        select_layers(4, [0, 4])
    with pytest.raises(DistillError):
        select_layers(4, 5)


def test_build_student_copies_the_kept_layers_exactly(teacher, tmp_path):
    out = build_student(teacher, [0, 3], tmp_path / "student")
    config = AutoConfig.from_pretrained(out)
    assert config.num_hidden_layers == 2
    t = AutoModelForCausalLM.from_pretrained(teacher).state_dict()
    s = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for key, value in s.items():
        # student layer 1 is teacher layer 3; embeddings, final norm and lm_head keep their names
        src = key.replace(".layers.1.", ".layers.3.")
        assert torch.equal(value, t[src]), key
    # a normal HF folder with the teacher's tokenizer and chat template
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(teacher).get_vocab()
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert json.loads((out / STUDENT_MARKER).read_text())["kept_layers"] == [0, 3]
    # the same pruning is reused, not rebuilt
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert build_student(teacher, [0, 3], out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_mismatched_tokenizers_are_refused(teacher, tmp_path):
    other = AutoTokenizer.from_pretrained(teacher)
    other.add_tokens(["<new_token_a>", "<new_token_b>"])
    with pytest.raises(DistillError, match="tokenizers differ.*GOLD"):
        check_same_tokenizer(other, teacher)
    check_same_tokenizer(teacher, teacher)


def test_presets_and_overrides():
    assert set(PRESETS) == set(WHITE_BOX_METHODS)
    assert set(get_args(Method)) == {*WHITE_BOX_METHODS, "sft", "distill"}
    for method, preset in PRESETS.items():
        params = TrainConfig(method=method).gkd_params()
        assert {k: params[k] for k in preset} == preset
    assert TrainConfig(method="gkd", lmbda=1.0, beta=0.1).gkd_params()["lmbda"] == 1.0
    assert TrainConfig(method="onpolicy", beta=0.5).gkd_params() == {
        "lmbda": 1.0, "beta": 0.5, "seq_kd": False, "temperature": 0.9, "max_new_tokens": 64}
    assert TrainConfig(method="distill").method_params() == {"label_weight": 0.5}


def test_no_teacher_means_the_datas_teacher_and_rows_without_lineage_have_none():
    from core.errors import TeacherError
    from training.train import logit_teacher

    config = TrainConfig(method="kd", student="/tmp/s")  # valid: the data's teacher, read at train time
    assert config.teacher is None
    with pytest.raises(TeacherError, match="needs the teacher's logits: the rows have no lineage"):
        logit_teacher(config, None)
    assert logit_teacher(config, {"m": "/w/m"}) == "/w/m"
    with pytest.raises(TeacherError, match="several teachers"):
        logit_teacher(config, {"a": "/w/a", "b": "/w/b"})
    assert logit_teacher(TrainConfig(method="sft", student="/tmp/s"), None) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "kd", "teacher": "openai:gpt-4o-mini", "student": "/tmp/s"}, "API-only"),
        ({"method": "sft", "beta": 0.5}, "lmbda/beta only apply"),
        ({"method": "seqkd", "lmbda": 0.5}, "lmbda must be 0"),
        ({"method": "onpolicy", "lmbda": 0.5}, "lmbda must be 1"),
        ({"method": "kd", "packing": True}, "packing"),
        ({"method": "sft", "student": "prune", "teacher": "openai:gpt-4o"}, "API-only"),
        ({"method": "sft", "keep_layers": 1.5}, "fraction"),
        ({"method": "distill", "alpha": 0.3}, "'alpha' was renamed 'label_weight'.*1 - alpha"),
    ],
)
def test_contradictions_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_sft_works_with_an_api_teacher_and_yaml_round_trips(tmp_path):
    config = TrainConfig(method="sft", teacher="openai:gpt-4o-mini", student="/models/s", keep_layers=[0, 2])
    path = config.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(path) == config
    (tmp_path / "bad.yaml").write_text("method: kd\nteacher: 'openai:x'\n")
    with pytest.raises(InputError, match="bad.yaml"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
