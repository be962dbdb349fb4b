"""Every method trains a tiny random LLaMA: all trainable parameters move, the loss is finite,
the KD presets reach TRL as intended, and SFT's labels cover the assistant turn only."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import DistillError, InputError
from storage.datasets import step_by_step_examples
from training.config import PRESETS, TrainConfig
from training.data import prompt_messages
from training.distill_step_by_step import EXPLAIN, PREDICT, step_by_step_dataset
from training.kd import build_kd_trainer
from training.sft import build_sft_trainer
from training.testing import toy_rows
from training.train import train

METHODS = ["sft", "kd", "rkl", "jsd", "seqkd", "gkd", "onpolicy", "distill"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(method, student, teacher, out, **kw):
    return TrainConfig(method=method, student=str(student), teacher=str(teacher), max_steps=2, batch_size=4,
                       max_length=64, max_new_tokens=8, learning_rate=1e-2, output_dir=str(out), **kw)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_changes_every_parameter(method, tiny_models, tmp_path):
    student, teacher = tiny_models
    seen = []
    config = _config(method, student, teacher, tmp_path / "ckpt")
    result = train(config, toy_rows(8, rationale=method == "distill"), on_progress=seen.append, show_progress=False)

    assert [h["step"] for h in result.loss_history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in result.loss_history)
    assert result.final_loss == result.loss_history[-1]["loss"]
    before = AutoModelForCausalLM.from_pretrained(student).state_dict()
    after = AutoModelForCausalLM.from_pretrained(result.checkpoint).state_dict()
    unchanged = [k for k in before if torch.allclose(before[k], after[k])]
    assert unchanged == []
    assert seen[-1]["done"] and seen[-1]["step"] == 2 and seen[-1]["total"] == 2
    assert TrainConfig.from_yaml(f"{result.checkpoint}/train_config.yaml") == config


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_kd_presets_reach_trl(method, tiny_models, tmp_path):
    student, teacher = tiny_models
    config = _config(method, student, teacher, tmp_path)
    tok = AutoTokenizer.from_pretrained(student)
    trainer = build_kd_trainer(config, AutoModelForCausalLM.from_pretrained(student),
                               AutoModelForCausalLM.from_pretrained(teacher), tok, toy_rows(4), str(tmp_path))
    for knob, value in PRESETS[method].items():
        assert getattr(trainer.args, knob) == value, knob
    assert (trainer.lmbda, trainer.beta, trainer.seq_kd) == (
        PRESETS[method]["lmbda"], PRESETS[method]["beta"], PRESETS[method]["seq_kd"])
    assert trainer.args.max_new_tokens == 8 and trainer.args.temperature == 0.9
    assert not trainer.args.bf16 and not trainer.args.gradient_checkpointing and trainer.args.use_cpu


def test_onpolicy_trains_on_student_samples_only_and_gkd_mixes(tiny_models, tmp_path):
    """GKD's on-policy setting is lmbda = 1 (every step samples from the student); 'gkd' is the 50/50 mix."""
    student, teacher = tiny_models
    tok = AutoTokenizer.from_pretrained(student)
    built = {}
    for method in ("onpolicy", "gkd"):
        built[method] = build_kd_trainer(_config(method, student, teacher, tmp_path), AutoModelForCausalLM.from_pretrained(student),
                                         AutoModelForCausalLM.from_pretrained(teacher), tok, toy_rows(4), str(tmp_path))
    onpolicy, gkd = built["onpolicy"], built["gkd"]
    assert (onpolicy.args.lmbda, onpolicy.args.beta, onpolicy.args.seq_kd) == (1.0, 1.0, False)
    assert (onpolicy.lmbda, onpolicy.beta, onpolicy.seq_kd) == (1.0, 1.0, False)
    assert (gkd.args.lmbda, gkd.args.beta, gkd.args.seq_kd) == (0.5, 0.5, False)


def test_sft_labels_cover_the_assistant_turn_only(tiny_models, tmp_path):
    student, _ = tiny_models
    tok = AutoTokenizer.from_pretrained(student)
    rows = toy_rows(2)
    rows[0]["system_prompt"] = "Be brief."
    trainer = build_sft_trainer(_config("sft", student, student, tmp_path), AutoModelForCausalLM.from_pretrained(student),
                                tok, rows, str(tmp_path))
    for example, row in zip(trainer.train_dataset, rows):
        labels = example["labels"]
        first = next(i for i, lab in enumerate(labels) if lab != -100)
        assert all(lab != -100 for lab in labels[first:])  # one contiguous completion
        assert tok.decode(labels[first:]) == row["response"] + "<|im_end|>\n"
        prompt = tok.decode(example["input_ids"][:first])
        assert prompt.endswith("<|im_start|>assistant\n") and row["instruction"] in prompt
    assert "Be brief." in tok.decode(trainer.train_dataset[0]["input_ids"])


def test_sft_packing_runs(tiny_models, tmp_path):
    student, teacher = tiny_models
    result = train(_config("sft", student, teacher, tmp_path / "p", packing=True), toy_rows(8), show_progress=False)
    assert math.isfinite(result.final_loss)


def test_step_by_step_tasks():
    rows = toy_rows(2, rationale=True)
    rows[0]["system_prompt"] = "Be brief."
    ds = step_by_step_dataset(rows)
    assert ds["task"] == ["predict", "explain", "predict", "explain"]
    predict, explain = ds[0], ds[1]
    assert predict["prompt"][-1]["content"].startswith(PREDICT) and predict["completion"][0]["content"] == "3"
    assert explain["prompt"][-1]["content"].startswith(EXPLAIN) and "count up" in explain["completion"][0]["content"]
    # The prompt is the one evaluation asks a step-by-step student with (system turn, prefixed user turn) ...
    assert predict["prompt"] == prompt_messages(rows[0], prefix=PREDICT)
    assert explain["prompt"] == prompt_messages(rows[0], prefix=EXPLAIN)
    assert predict["prompt"][0] == {"role": "system", "content": "Be brief."}
    # ... and the tasks are those the jsonl-step-by-step export writes.
    assert [(ex["task"], ex["prompt"][-1]["content"], ex["completion"][0]["content"]) for ex in ds] == [
        (t["task"], t["input"], t["output"]) for row in rows for t in step_by_step_examples(row)]
    with pytest.raises(InputError, match=r"row 1 \(sample s1\) has no rationale: method 'distill' needs a rationale"):
        step_by_step_dataset([rows[0], {**rows[1], "rationale": " "}])
    with pytest.raises(InputError, match=r"row 0 \(sample s0\) has no label"):
        step_by_step_dataset([{**rows[0], "label": " "}])


def test_kd_with_a_foreign_tokenizer_is_refused(tiny_models, tmp_path):
    student, teacher = tiny_models
    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(student)
    tok = AutoTokenizer.from_pretrained(student)
    tok.add_tokens(["<only_here>"])
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(DistillError, match="tokenizers differ"):
        train(_config("kd", other, teacher, tmp_path / "x"), toy_rows(4), show_progress=False)


def test_step_by_step_loss_weighs_the_two_tasks(tiny_models, tmp_path):
    from training.distill_step_by_step import build_distill_trainer

    student, _ = tiny_models
    config = _config("distill", student, student, tmp_path, label_weight=0.75)
    model = AutoModelForCausalLM.from_pretrained(student)
    trainer = build_distill_trainer(config, model, AutoTokenizer.from_pretrained(student),
                                    toy_rows(1, rationale=True), str(tmp_path))
    examples = [trainer.train_dataset[0], trainer.train_dataset[1]]  # predict, explain of the same row
    batch = trainer.data_collator(examples)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        separate = [model(input_ids=batch["input_ids"][i:i + 1], attention_mask=batch["attention_mask"][i:i + 1],
                          labels=batch["labels"][i:i + 1]).loss for i in (0, 1)]
    assert loss.item() == pytest.approx(0.75 * separate[0].item() + 0.25 * separate[1].item(), rel=1e-4)


def test_step_by_step_loss_is_a_weighted_sum_of_per_task_means(tiny_models, tmp_path):
    """A batch with 3 predict and 1 explain examples: label_weight * mean(L_predict) +
    (1 - label_weight) * mean(L_explain), each L an example's mean token loss; a batch of one
    task gives that task's weighted mean alone."""
    from training.distill_step_by_step import build_distill_trainer

    student, _ = tiny_models
    config = _config("distill", student, student, tmp_path, label_weight=0.25)
    model = AutoModelForCausalLM.from_pretrained(student)
    trainer = build_distill_trainer(config, model, AutoTokenizer.from_pretrained(student),
                                    toy_rows(3, rationale=True), str(tmp_path))
    ds = trainer.train_dataset  # per row: its predict example, then its explain example
    p0, e0, p1, e1, p2 = ds[0], ds[1], ds[2], ds[3], ds[4]

    def alone(example):  # the example in a batch of its own (no padding): its mean token loss
        batch = trainer.data_collator([example])
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss.item()

    def loss(examples):
        return trainer.compute_loss(model, dict(trainer.data_collator(examples))).item()

    with torch.no_grad():
        lp0, lp1, lp2, le0, le1 = map(alone, (p0, p1, p2, e0, e1))
        mixed, explain_only, predict_only = loss([p0, e1, p1, p2]), loss([e0, e1]), loss([p1])
    assert len({lp0, lp1, lp2, le0, le1}) == 5  # distinct losses, so a wrong average shows
    assert mixed == pytest.approx(0.25 * (lp0 + lp1 + lp2) / 3 + 0.75 * le1, rel=1e-4)
    assert explain_only == pytest.approx(0.75 * (le0 + le1) / 2, rel=1e-4)
    assert predict_only == pytest.approx(0.25 * lp1, rel=1e-4)
