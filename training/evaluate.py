"""Honest before/after numbers: every model answers the same held-out prompts the same way.

Held-out prompts are the eval split of the dataset version the student trained on (never
trained on) plus any JSONL of ``{"instruction", "input", "response"?, "label"?}`` the user
gives. Every model generates greedily, batched with left padding, through its chat
template; the generation settings are stored with the numbers.

Metrics (each lands in ``evaluations`` as one row, ``n`` = items it was computed on):

- ``rougeL_teacher``: ROUGE-L F (rouge_score, stemming on) x100 against the teacher's
  response: the dataset's response for eval-split rows, the local teacher's greedy answer
  for JSONL prompts.
- ``rougeL_reference``: the same against gold references (JSONL ``response``), when present.
  Both take the max over references when an item has several.
- ``exact_match``: x100, for labelled / rationale items: the final answer
  (``core.text.extract_answer``: after "So the answer is", else the first line) equals the
  label after ``core.text.normalize_answer``, the same rules the rationales method filtered
  the teacher's answers by.
- ``kl_teacher_student``: student-teacher agreement, mean per-token KL(teacher || student)
  in nats over the teacher's response tokens, teacher forced. Lower is better; needs a
  local teacher with the same tokenizer.

    results = evaluate_models({"before": student0, "sft": ckpt}, items, teacher_path=teacher)
    rich.print(comparison_table(results))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.errors import InputError
from core.jsonl import line_error, read_jsonl
from core.text import extract_answer, normalize_answer
from training.config import EvalConfig
from training.data import as_rows, prompt_messages

METRIC_TITLES = {
    "rougeL_teacher": "ROUGE-L vs teacher",
    "rougeL_reference": "ROUGE-L vs reference",
    "exact_match": "exact match",
    "kl_teacher_student": "KL(teacher‖student)",  # no "|": it would split a markdown cell
}


class EvalResult(BaseModel):
    """One model's numbers on one set of held-out items."""

    label: str = Field(description="Row label: teacher, student (before), sft, kd, ...")
    model_path: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="metric -> value")
    counts: dict[str, int] = Field(default_factory=dict, description="metric -> n it was computed on")
    generation: dict[str, Any] = Field(default_factory=dict, description="How the outputs were generated.")
    predictions: list[str] = Field(default_factory=list, description="The model's outputs, item by item.")
    training_run_id: str | None = None


# -- held-out items --------------------------------------------------------------------


def eval_items(rows: Any = None, *, jsonl: str | Path | None = None, max_prompts: int | None = None) -> list[dict]:
    """Held-out items: eval-split rows (their response is the teacher's) + JSONL prompts."""
    items = []
    for row in as_rows(rows or []):
        if row.get("split", "eval") != "eval":
            continue
        items.append({
            "instruction": row["instruction"], "input": row.get("input") or "",
            "system_prompt": row.get("system_prompt"), "teacher_response": row.get("response"),
            "references": [], "label": row.get("label"), "source": "dataset",
        })
    if jsonl:
        items.extend(read_prompts_jsonl(jsonl))
    if not items:
        raise InputError("no held-out prompts: the eval split is empty and no prompts JSONL was given")
    return items[:max_prompts] if max_prompts else items


def read_prompts_jsonl(path: str | Path) -> list[dict]:
    """Held-out prompts from JSONL: ``{"instruction", "input"?, "response"? (reference or list of
    them), "teacher_response"?, "label"?, "system_prompt"?}`` per line."""
    items = []
    for line_no, obj in read_jsonl(path, what="prompts file"):
        if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
            raise line_error(path, line_no, 'expected an object with a non-empty "instruction"')
        ref = obj.get("response")
        items.append({
            "instruction": obj["instruction"], "input": obj.get("input") or "",
            "system_prompt": obj.get("system_prompt"), "teacher_response": obj.get("teacher_response"),
            "references": [ref] if isinstance(ref, str) else list(ref or []),
            "label": obj.get("label"), "source": str(path),
        })
    return items


# -- metrics ---------------------------------------------------------------------------

_scorer = None


def rouge_l(prediction: str, references: list[str]) -> float:
    """ROUGE-L F-measure x100 (stemming on), the max over references."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    refs = [r for r in references if r]
    if not refs:
        return 0.0
    return 100.0 * max(_scorer.score(ref, prediction)["rougeL"].fmeasure for ref in refs)


def exact_match(prediction: str, label: str) -> bool:
    return normalize_answer(extract_answer(prediction)) == normalize_answer(extract_answer(label))


# -- models ----------------------------------------------------------------------------


def _load(model_or_path, device: str):
    from training.train import load_model, load_tokenizer

    if isinstance(model_or_path, (str, Path)):
        return load_model(model_or_path, device, for_inference=True), load_tokenizer(model_or_path)
    model, tokenizer = model_or_path
    return model.eval().to(device), tokenizer


def _prompt_texts(tokenizer, items: list[dict], prefix: str) -> list[str]:
    return [
        tokenizer.apply_chat_template(prompt_messages(it, prefix=prefix), add_generation_prompt=True, tokenize=False)
        for it in items
    ]


def generate(model, tokenizer, items: list[dict], *, max_new_tokens: int = 64, batch_size: int = 8,
             prefix: str = "", device: str = "cpu") -> list[str]:
    """Greedy answers to ``items``, batched with left padding."""
    import torch
    from transformers import GenerationConfig

    texts = _prompt_texts(tokenizer, items, prefix)
    gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gen)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def mean_token_kl(student, teacher, tokenizer, items: list[dict], responses: list[str], *,
                  batch_size: int = 4, prefix: str = "", device: str = "cpu") -> float:
    """Mean over response tokens of KL(teacher || student), teacher forced on ``responses``."""
    import torch
    import torch.nn.functional as F

    prompts = _prompt_texts(tokenizer, items, prefix)
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        seqs, spans = [], []
        for prompt, response in zip(prompts[start:start + batch_size], responses[start:start + batch_size]):
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            seqs.append(p_ids + r_ids)
            spans.append((len(p_ids), len(p_ids) + len(r_ids)))
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        with torch.no_grad():
            s_logits = student(input_ids=ids, attention_mask=mask).logits.float()
            t_logits = teacher(input_ids=ids, attention_mask=mask).logits.float()
        for row, (lo, hi) in enumerate(spans):
            # logits at position t predict token t + 1: the response tokens lo..hi-1 come from lo-1..hi-2
            t_logp = F.log_softmax(t_logits[row, lo - 1:hi - 1], dim=-1)
            s_logp = F.log_softmax(s_logits[row, lo - 1:hi - 1], dim=-1)
            kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
            total += float(kl.sum())
            count += hi - lo
    return total / max(count, 1)


def _same_tokenizer(a, b) -> bool:
    from core.errors import DistillError
    from training.student import check_same_tokenizer

    try:
        check_same_tokenizer(a, b)
        return True
    except DistillError:
        return False


def evaluate_model(model_or_path, items: list[dict], *, label: str, teacher=None,
                   config: EvalConfig | None = None, prefix: str = "", device: str | None = None,
                   training_run_id: str | None = None) -> EvalResult:
    """Generate, score against teacher responses / references / labels, and (with a local
    ``teacher`` = (model, tokenizer) or path) measure KL(teacher || student)."""
    import torch

    config = config or EvalConfig()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = _load(model_or_path, device)
    predictions = generate(model, tokenizer, items, max_new_tokens=config.max_new_tokens,
                           batch_size=config.batch_size, prefix=prefix, device=device)
    result = EvalResult(
        label=label, model_path=str(model_or_path) if isinstance(model_or_path, (str, Path)) else None,
        predictions=predictions, training_run_id=training_run_id,
        generation={"do_sample": False, "max_new_tokens": config.max_new_tokens, "batch_size": config.batch_size,
                    "padding_side": "left", "chat_template": True, "prompt_prefix": prefix,
                    "rouge": "rougeL F, stemmer, max over references, x100"},
    )
    scored = [(p, it["teacher_response"]) for p, it in zip(predictions, items) if it.get("teacher_response")]
    if scored:
        result.metrics["rougeL_teacher"] = sum(rouge_l(p, [r]) for p, r in scored) / len(scored)
        result.counts["rougeL_teacher"] = len(scored)
    scored = [(p, it["references"]) for p, it in zip(predictions, items) if it.get("references")]
    if scored:
        result.metrics["rougeL_reference"] = sum(rouge_l(p, refs) for p, refs in scored) / len(scored)
        result.counts["rougeL_reference"] = len(scored)
    scored = [(p, it["label"]) for p, it in zip(predictions, items) if it.get("label")]
    if scored:
        result.metrics["exact_match"] = 100.0 * sum(exact_match(p, lab) for p, lab in scored) / len(scored)
        result.counts["exact_match"] = len(scored)
    if teacher is not None and config.agreement:
        t_model, t_tokenizer = _load(teacher, device)
        with_resp = [(it, it["teacher_response"]) for it in items if it.get("teacher_response")]
        if with_resp and _same_tokenizer(tokenizer, t_tokenizer):
            result.metrics["kl_teacher_student"] = mean_token_kl(
                model, t_model, tokenizer, [i for i, _ in with_resp], [r for _, r in with_resp],
                batch_size=max(1, config.batch_size // 2), prefix=prefix, device=device)
            result.counts["kl_teacher_student"] = len(with_resp)
    return result


def fill_teacher_responses(items: list[dict], teacher, config: EvalConfig | None = None,
                           device: str | None = None) -> list[dict]:
    """Give items without a teacher response (JSONL prompts) the local teacher's greedy answer."""
    import torch

    missing = [it for it in items if not it.get("teacher_response")]
    if not missing or teacher is None:
        return items
    config = config or EvalConfig()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = _load(teacher, device)
    answers = generate(model, tokenizer, missing, max_new_tokens=config.max_new_tokens,
                       batch_size=config.batch_size, device=device)
    for it, answer in zip(missing, answers):
        it["teacher_response"] = answer
    return items


def evaluate_models(models: dict[str, Any], items: list[dict], *, teacher=None, config: EvalConfig | None = None,
                    prefixes: dict[str, str] | None = None, run_ids: dict[str, str] | None = None,
                    device: str | None = None) -> list[EvalResult]:
    """Evaluate several models (label -> path) on the same items; the teacher answers
    JSONL prompts first so every model is scored against the same responses."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(teacher, (str, Path)):
        teacher = _load(teacher, device)  # once, not once per model
    items = fill_teacher_responses(items, teacher, config, device)
    return [
        evaluate_model(path, items, label=label, teacher=teacher, config=config,
                       prefix=(prefixes or {}).get(label, ""), device=device,
                       training_run_id=(run_ids or {}).get(label))
        for label, path in models.items()
    ]


def evaluate_dataset(store, dataset: str, version: int | None, models: dict[str, Any], *, teacher=None,
                     config: EvalConfig | None = None, prefixes: dict[str, str] | None = None,
                     run_ids: dict[str, str] | None = None, run_id: str | None = None,
                     device: str | None = None) -> list[EvalResult]:
    """Evaluate ``models`` on a dataset version's eval split (+ ``config.prompts_jsonl``) and
    record every number in ``evaluations``."""
    from storage.datasets import get_dataset, load_rows

    config = config or EvalConfig()
    info = get_dataset(store, dataset, version)
    version = int(info["version"] if isinstance(info, dict) else info.version)
    rows = load_rows(store, dataset, version, split="eval")
    items = eval_items(rows, jsonl=config.prompts_jsonl, max_prompts=config.max_prompts)
    results = evaluate_models(models, items, teacher=teacher, config=config, prefixes=prefixes,
                              run_ids=run_ids, device=device)
    record_evaluations(store, results, dataset_name=dataset, dataset_version=version, run_id=run_id)
    return results


# -- persistence and display -----------------------------------------------------------


def record_evaluations(store, results: list[EvalResult], *, dataset_name: str | None = None,
                       dataset_version: int | None = None, split: str = "eval", run_id: str | None = None) -> int:
    """One ``evaluations`` row per (model, metric)."""
    from training.records import insert_evaluations

    rows = [
        {"training_run_id": r.training_run_id, "model_label": r.label, "model_path": r.model_path,
         "dataset_name": dataset_name, "dataset_version": dataset_version, "split": split, "metric": metric,
         "value": value, "n": r.counts.get(metric), "generation": r.generation, "run_id": run_id}
        for r in results for metric, value in r.metrics.items()
    ]
    return insert_evaluations(store, rows)


def _table_rows(results: list[EvalResult]) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in METRIC_TITLES if any(m in r.metrics for r in results)]
    rows = []
    for r in results:
        cells = [r.label]
        for m in metrics:
            fmt = "{:.4f}" if m == "kl_teacher_student" else "{:.2f}"
            cells.append(fmt.format(r.metrics[m]) if m in r.metrics else "-")
        cells.append(str(max(r.counts.values(), default=0)))
        rows.append(cells)
    return ["model", *[METRIC_TITLES[m] for m in metrics], "n"], rows


def comparison_table(results: list[EvalResult], title: str = "Evaluation (held-out prompts)"):
    """A rich Table: one row per model (teacher, student before training, each method)."""
    from rich.table import Table

    header, rows = _table_rows(results)
    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right")
    for cells in rows:
        table.add_row(*cells)
    return table


def comparison_markdown(results: list[EvalResult]) -> str:
    header, rows = _table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def results_from_store(store, *, dataset_name: str | None = None, dataset_version: int | None = None) -> list[EvalResult]:
    """Rebuild EvalResults (latest value per model and metric) from the evaluations table."""
    sql = "SELECT * FROM evaluations WHERE 1=1"
    params: list[Any] = []
    if dataset_name is not None:
        sql += " AND dataset_name = ?"
        params.append(dataset_name)
    if dataset_version is not None:
        sql += " AND dataset_version = ?"
        params.append(dataset_version)
    results: dict[str, EvalResult] = {}
    for row in store.query(sql + " ORDER BY id", params):
        r = results.setdefault(row["model_label"], EvalResult(label=row["model_label"], model_path=row["model_path"],
                                                               training_run_id=row["training_run_id"]))
        r.metrics[row["metric"]] = row["value"]
        r.counts[row["metric"]] = row["n"] or 0
    return list(results.values())
