"""What each flow publishes when it ends: a table of counts and a markdown report with plots.

    await apublish_generate(store, run_name, summary)      # generate (async flow)
    publish_curate(store, run_name, summary)               # curate
    publish_train(store, run_id, name, summary, losses)    # train

Every number in a report carries the SQL that reproduces it (``flows/queries.py``, shown
with its values inlined so it can be pasted into ``distill sql``). Reports are a view:
the data is in the store, and a refused artifact is logged, never fatal
(``flows/artifacts.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from flows import artifacts, queries
from flows.queries import for_display
from storage.store import Store


def _funnel(start: tuple[str, int], dropped: Mapping[str, int]) -> list[tuple[str, int]]:
    """Funnel stages: the starting count, then what is left after each filter's drops."""
    stages = [start]
    left = start[1]
    for key, n in dropped.items():
        left -= n
        stages.append((f"after {key}", left))
    return stages


def _lengths_chart(rows: list[dict[str, Any]], title: str) -> bytes:
    return artifacts.length_histogram(
        {"instruction": [r["instruction_words"] for r in rows], "response": [r["response_words"] for r in rows]},
        title=title)


# -- generate ---------------------------------------------------------------------------


def generate_counts(s: Mapping[str, Any]) -> dict[str, Any]:
    counts = {"target": s["target"], "requested": s["requested"], "sent to teacher": s["sent"],
              "served from ledger": s["cached"], "failed": s["failed"], "samples": s["samples"],
              "duplicates of other runs": s["duplicates_of_other_runs"], "kept": s["kept"]}
    counts.update({f"dropped by {k}": v for k, v in s["dropped"].items()})
    counts.update({"asked again (empty or cut off)": s["retried"]})
    counts.update({f"lost: {k}": v for k, v in s["lost"].items()})
    return counts


def _generate_data(store: Store, run_id: str) -> dict[str, Any]:
    return {name: store.query(sql, [run_id]) for name, sql in (
        ("kept", queries.RUN_KEPT), ("requests", queries.RUN_REQUESTS), ("failures", queries.RUN_FAILURES),
        ("drops", queries.RUN_DROPS), ("lengths", queries.RUN_KEPT_LENGTHS))}


async def apublish_generate(store: Store, run_name: str, s: Mapping[str, Any]) -> None:
    """The generate run's counts table and report (numbers read back from the store)."""
    run_id = s["run_id"]
    data = await asyncio.to_thread(_generate_data, store, run_id)
    new = s["samples"] - s["duplicates_of_other_runs"]
    funnel, lengths = await asyncio.gather(
        asyncio.to_thread(artifacts.funnel_chart,
                          [("samples", s["samples"]), *_funnel(("new (not in other runs)", new), s["dropped"])]),
        asyncio.to_thread(_lengths_chart, data["lengths"], "Kept samples: length in words"))
    r = artifacts.Report(f"Generation report: {run_name}")
    r.text(f"**{s['message']}**\n\nMethod `{s['method']}`, teacher `{s['teacher']}`, run id `{run_id}`.")
    r.number("kept samples (all sessions of this run)", data["kept"][0]["n"], for_display(queries.RUN_KEPT, [run_id]))
    for row in data["requests"]:
        r.number(f"requests {row['status']}", row["n"], for_display(queries.RUN_REQUESTS, [run_id]))
    r.number("tokens used", s["tokens_used"], for_display(queries.RUN_SPENT, [run_id]))
    r.number("answers asked again (empty or cut off)", s["retried"])
    for reason, n in s["lost"].items():
        r.number(f"answers lost: {reason}", n)
    if data["failures"]:
        r.heading("Failed requests, by reason").table(data["failures"], sql=for_display(queries.RUN_FAILURES, [run_id]))
    r.heading("Dropped, by filter and reason").table(data["drops"], sql=for_display(queries.RUN_DROPS, [run_id]))
    r.heading("Plots").image("Filter funnel", funnel)
    r.image("Lengths of kept samples (words)", lengths)
    r.text(f"Lengths come from:\n\n```sql\n{for_display(queries.RUN_KEPT_LENGTHS, [run_id])}\n```")
    await asyncio.gather(
        artifacts.apublish_counts(artifacts.artifact_key("generate", run_name, "counts"), generate_counts(s),
                                  f"Generation counts for run {run_name}"),
        r.apublish(artifacts.artifact_key("generate", run_name, "report")))


# -- curate -----------------------------------------------------------------------------


def publish_curate(store: Store, run_id: str, run_name: str, s: Mapping[str, Any]) -> None:
    """The curate run's counts table and report."""
    counts = {"candidates": s["candidates"], "judged": s["judged"], "kept": s["kept"]}
    counts.update({f"dropped by {k}": v for k, v in s["dropped"].items()})
    if "judge" in s:
        j = s["judge"]
        counts.update({"judge: not judged before": j["candidates"], "judge: judged": j["judged"],
                       "judge: kept": j["kept"], "judge: dropped low_score": j["low_score"],
                       "judge: dropped judge_failed": j["judge_failed"], "judge: requests": j["requests"],
                       "judge: requests sent": j.get("sent", 0)})
    if "compare" in s:
        c = s["compare"]
        counts.update({"compare: pairs": c["pairs"], "compare: not judged before": c["candidates"],
                       "compare: judged": c["judged"], "compare: a wins": c["a_wins"], "compare: b wins": c["b_wins"],
                       "compare: ties": c["ties"], "compare: failed": c["failed"], "compare: requests": c["requests"],
                       "compare: requests sent": c["sent"]})
    counts.update({"dataset rows": s["rows"], "train": s["train"], "eval": s["eval"], "new rows": s["new_rows"]})
    artifacts.publish_counts(artifacts.artifact_key("curate", run_name, "counts"), counts,
                             f"Curation counts for run {run_name}")

    name, version = s["dataset"], s["version"]
    r = artifacts.Report(f"Curation report: {run_name}")
    r.text(f"**{s['message']}**")
    ref_sql = for_display(queries.DATASET_VERSION, [name, version])
    r.number("dataset rows", s["rows"], ref_sql).number("train", s["train"], ref_sql).number("eval", s["eval"], ref_sql)
    r.number("new rows vs previous version", s["new_rows"],
             for_display(queries.NEW_DATASET_ROWS, [name, version, version - 1]))
    drops = store.query(queries.RUN_DROPS, [run_id])
    r.heading("Dropped in this run, by filter and reason").table(drops, sql=for_display(queries.RUN_DROPS, [run_id]))
    stages = _funnel(("candidates", s["candidates"]), s["dropped"])
    if "judge" in s:
        verdicts = store.query(queries.RUN_JUDGE_VERDICTS, [run_id])
        r.heading(f"LLM judge (keep score >= {s['judge']['min_score']:g})").table(
            verdicts, sql=for_display(queries.RUN_JUDGE_VERDICTS, [run_id]))
        if s["judge"]["judged"]:
            stages += [("judge: scored", s["judge"]["judged"]), ("judge: kept", s["judge"]["kept"])]
    if "compare" in s:
        c = s["compare"]
        r.heading(f"Pairwise judge: {c['a']} (a) vs {c['b']} (b), judged by {c['judge'] or '-'}")
        if c.get("standings"):  # every verdict this judge stored for a vs b, earlier runs' included
            r.text("Standings over every stored verdict of this judge (pairs: verdicts that parsed):").table(
                [c["standings"]], sql=for_display(queries.PAIRWISE_STANDINGS, [c["a"], c["b"], c["judge"]]))
        verdicts = store.query(queries.RUN_PAIRWISE_VERDICTS, [run_id])
        r.heading("Pairwise verdicts of this run").table(
            verdicts, sql=for_display(queries.RUN_PAIRWISE_VERDICTS, [run_id]))
    lengths = store.query(queries.DATASET_LENGTHS, [name, version])
    r.heading("Plots").image("Filter funnel", artifacts.funnel_chart(stages))
    r.image("Dataset lengths (words)", _lengths_chart(lengths, f"{name}@{version}: length in words"))
    r.heading("The SQL that selected this version").text(f"```sql\n{s['sql']}\n```")
    if s["exports"]:
        r.heading("Exports").text("\n".join(f"- {fmt}: `{path}`" for fmt, path in s["exports"].items()))
    r.publish(artifacts.artifact_key("curate", run_name, "report"))


# -- train ------------------------------------------------------------------------------


def evaluation_rows(evaluations: list[dict]) -> list[dict[str, Any]]:
    """One row per model with its metrics, for tables (CLI, report)."""
    from training.evaluate import METRIC_TITLES

    rows = []
    for e in evaluations:
        row: dict[str, Any] = {"model": e["label"]}
        for metric, title in METRIC_TITLES.items():
            if metric in e["metrics"]:
                row[title] = round(e["metrics"][metric], 4 if metric == "kl_teacher_student" else 2)
        row["n"] = max(e["counts"].values(), default=0)
        rows.append(row)
    return rows


def publish_train(run_id: str, name: str, s: Mapping[str, Any], loss_history: list[dict]) -> None:
    """The train run's counts table, evaluation table and report."""
    m = s["metrics"]
    counts = {"dataset": f"{s['dataset']}@{s['version']}", "method": s["method"], "steps": m.get("steps"),
              "train rows": m.get("train_rows"), "final loss": s["final_loss"],
              "tokens/s": round(m["tokens_per_s"], 1) if m.get("tokens_per_s") else None}
    artifacts.publish_counts(artifacts.artifact_key("train", name, "counts"), counts, f"Training run {name}")
    r = artifacts.Report(f"Training report: {name}")
    r.text(f"**{s['message']}**")
    tr_sql = for_display(queries.TRAINING_RUN, [s["training_run_id"]])
    r.number("final loss", s["final_loss"], tr_sql).number("steps", m.get("steps"), tr_sql)
    if loss_history:
        r.heading("Loss").image("Training loss", artifacts.loss_curve(
            [p["step"] for p in loss_history], [p["loss"] for p in loss_history], title=f"{s['method']} loss"))
        r.text("Per-step losses: `" + for_display("SELECT loss_history FROM training_runs WHERE id = ?",
                                                  [s["training_run_id"]]) + "`")
    if s["evaluations"]:
        rows = evaluation_rows(s["evaluations"])
        r.heading("Evaluation on the held-out split").table(rows, sql=for_display(queries.RUN_EVALUATIONS, [run_id]))
        artifacts.publish_table(artifacts.artifact_key("train", name, "evaluation"), rows,
                                f"Before/after evaluation, {s['dataset']}@{s['version']}")
    r.publish(artifacts.artifact_key("train", name, "report"))


# -- lion -------------------------------------------------------------------------------


def lion_counts(row: Any) -> dict[str, Any]:
    """An iteration's numbers in the order the counts table shows them."""
    def num(value: Any) -> Any:
        return None if value is None else round(value, 2)

    return {"Train Pool": row.train_pool, "Cache Pool": row.cache_pool, "judged": row.judged,
            "failed verdicts": row.failed, "hard": row.hard, "easy": row.easy,
            "mean teacher score": num(row.mean_teacher_score), "mean student score": num(row.mean_student_score),
            "mean gap": num(row.mean_gap), "new instructions": row.generated, "new from hard": row.generated_hard,
            "new from easy": row.generated_easy, "dropped by filters": row.dropped,
            "ROUGE-L vs teacher (held-out)": num(row.rougeL_teacher),
            "KL(teacher‖student) (held-out)": None if row.kl_teacher_student is None
            else round(row.kl_teacher_student, 4),
            "tokens": row.tokens, "seconds": row.elapsed_s}


def publish_lion_iteration(store: Store, run_name: str, row: Any, generation: Mapping[str, int]) -> None:
    """One Lion iteration's counts table and report: pool sizes, hard/easy counts, the score
    distributions and the gap as plots, the held-out evaluation, what generation dropped."""
    i, run_id = row.iteration, row.run_id
    key = ("lion", run_name, f"it{i}")
    artifacts.publish_counts(artifacts.artifact_key(*key, "counts"), lion_counts(row),
                             f"Lion {run_name}, iteration {i}")
    scores = store.query(queries.LION_SCORES, [run_id, i])
    threshold = store.query(queries.LION_THRESHOLD, [run_id, i])[0]["t"]
    r = artifacts.Report(f"Lion {run_name}: iteration {i}")
    r.text(f"Train Pool {row.train_pool}, Cache Pool {row.cache_pool}; the referee judged {row.judged} pairs "
           f"({row.failed} verdicts never parsed): **{row.hard} hard, {row.easy} easy**; "
           f"{row.generated} new instructions joined both pools. Student checkpoint `{row.checkpoint}` "
           f"(dataset `{row.dataset_name}@{row.dataset_version}`, training run `{row.training_run_id}`).")
    r.table([{"what": label, "value": "-" if value is None else value} for label, value in lion_counts(row).items()],
            sql=for_display(queries.LION_ITERATION, [run_id, i]))
    r.heading("The referee's scores")
    teacher = [s["teacher_score"] for s in scores]
    student = [s["student_score"] for s in scores]
    r.image("Teacher and student scores", artifacts.distribution_chart(
        {"teacher": teacher, "student": student}, title="Scores (averaged over both orders)", xlabel="score",
        edges=[x / 2 for x in range(1, 22)]))
    if scores:
        gaps = [s["gap"] for s in scores]
        low, high = min(min(gaps), -1.0), max(max(gaps), (threshold or 1.0) + 1)
        r.image("Gap (teacher - student)", artifacts.distribution_chart(
            {"gap": gaps}, title="Gap: teacher score - student score", xlabel="gap",
            edges=[x / 2 for x in range(int(low * 2) - 1, int(high * 2) + 2)],
            marker=(f"threshold {threshold:g}: hard at or right of it", threshold) if threshold is not None
            else None))
    r.text("Scores come from:\n\n" + f"```sql\n{for_display(queries.LION_SCORES, [run_id, i])}\n```")
    if row.failed:
        failed = store.query(queries.LION_FAILED_VERDICTS, [run_id, i])
        r.text(f"{row.failed} verdicts never named two scores on their first line (stored with their raw text, "
               "never given scores). The first lines of some (ab: the teacher's answer shown first, ba: the "
               "student's):").table(
            failed, sql=for_display(queries.LION_FAILED_VERDICTS, [run_id, i]))
    if row.eval:
        r.heading("Held-out evaluation")
        from training.evaluate import METRIC_TITLES

        rows = []
        for label, metrics in row.eval.items():
            cells: dict[str, Any] = {"model": label}
            for metric, title in METRIC_TITLES.items():
                if metric in metrics:
                    cells[title] = round(metrics[metric], 4 if metric == "kl_teacher_student" else 2)
            rows.append(cells)
        r.table(rows, sql=for_display(queries.LION_EVALUATIONS, [run_id, row.dataset_name, i]))
    drops = store.query(queries.LION_DROPS, [i, run_id])
    r.heading("Generation").text(
        f"{generation.get('requests', 0)} new instructions asked for, {generation.get('kept', 0)} kept "
        f"({row.generated_hard} from hard, {row.generated_easy} from easy).")
    r.table(drops, sql=for_display(queries.LION_DROPS, [i, run_id]))
    r.publish(artifacts.artifact_key(*key, "report"))
