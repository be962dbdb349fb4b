"""The Lion flow: the adversarial loop (Jiang et al. 2023), iteration after iteration.

    distill lion --config configs/lion.yaml --iterations 2
    python -c "from flows.lion import lion_flow; from flows.config import load_lion_config; \\
               lion_flow(load_lion_config('configs/lion.yaml'))"

One iteration i (the logic is ``generators/lion.py``; this file runs it as Prefect tasks
and stores what they return):

1. Imitation: the teacher answers the Train Pool (a task per batch); the answers to the
   instructions that joined before iteration i are frozen as version i of dataset
   ``lion-<run_name>`` (the SQL selects the teacher's answers only); the student trains
   on it (``training.train.train``: ``training_runs.name = lion-<run_name>-it<i>``),
   iteration 1 from the configured student (the pruned teacher by default), iteration i
   from iteration i-1's checkpoint. The student then answers the held-out prompts
   (ROUGE-L vs the teacher, KL with a local teacher, into ``evaluations``).
2. Discrimination: the teacher and the student (the checkpoint, served in-process or by a
   vLLM server, its requests ledgered as ``lion-<run_name>-student-it<i>``) answer the
   Cache Pool; the referee judges every pair in both orders, a task per batch, each
   batch's ``lion_judgments`` rows stored as it ends.
3. Generation: hard and easy instructions of this iteration's verdicts are drawn (with an
   RNG seeded by the run name and iteration), the generator writes new instructions, the
   filters drop some (``filter_decisions``), and the kept ones join both pools
   (``lion_pool``, iteration i, linked to the instruction they came from).
4. The ``lion_iterations`` row is written last, and the iteration's report published.

Resume: re-run the same run name. A finished iteration (one with its row) is skipped; in
an unfinished one, every teacher, student, referee and generator request already paid is
served from the ledger, a finished training run (by its name) is not trained again, a
judged pair is not judged again, an evaluated model is not evaluated again, and content
keys make replayed records duplicates that are not stored twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from core.embedded import model_folder
from core.errors import InputError, TeacherError
from filters.rouge import RougeNovelty
from flows import queries, reports
from flows.artifacts import Progress, artifact_key
from flows.config import LionConfig
from flows.runs import flow_run_name, prefect_flow_run_id, recorded_run, resolve_run_name, run_sync
from generators.common import rng_for
from generators.lion import (
    STUDENT_METHOD,
    LionPair,
    LionParams,
    LionSeed,
    aanswer,
    adiscriminate,
    agenerate_instructions,
    pick_seeds,
    student_exclusions,
    unanswered,
)
from generators.responses import ResponsesConfig, agenerate_responses
from generators.teachers import build_teacher
from generators.teachers.base import Teacher
from generators.teachers.config import TeacherConfig
from storage.datasets import create_dataset
from storage.records import (
    Instruction,
    LionIteration,
    LionJudgment,
    LionPoolEntry,
    Sample,
    canonical_json,
)
from storage.seeds import parse_instructions_file
from storage.store import Store
from training.config import EvalConfig, TrainConfig
from training.evaluate import eval_items

IMITATION = "imitation: teacher answers"
TRAINING = "imitation: training"
EVALUATION = "held-out evaluation"
TEACHER_ANSWERS = "discrimination: teacher answers"
STUDENT_ANSWERS = "discrimination: student answers"
REFEREE = "discrimination: referee"
GENERATION = "generation"
BEFORE = "student (before)"


def student_model(run_name: str, iteration: int) -> str:
    """The name iteration ``iteration``'s student answers under (its ledger keys)."""
    return f"lion-{run_name}-student-it{iteration}"


def student_label(iteration: int) -> str:
    """The ``evaluations.model_label`` of iteration ``iteration``'s student."""
    return f"lion it{iteration}"


def _parsed(row: dict[str, Any], *json_columns: str) -> dict[str, Any]:
    """A stored row with its JSON columns read back (as the record types define them)."""
    return {k: json.loads(v) if k in json_columns and isinstance(v, str) else v for k, v in row.items()}


# --------------------------------------------------------------------------- tasks


@task(name="lion-answers", task_run_name="it{iteration}-{who}-answers-{index}", cache_policy=NO_CACHE)
def answer_batch(iteration: int, who: str, index: int, instructions: list[Instruction], teacher: Teacher,
                 params: LionParams, store: Store, run_id: str) -> list[Sample]:
    """One batch of answers (the teacher's, or the student's: ``who``), stored with the
    student's kept out of datasets; returns the samples."""
    student = who == "student"

    async def _answer():
        try:
            return await aanswer(teacher, instructions, params, student=student, run_id=run_id)
        finally:
            await teacher.adetach()  # loop-bound clients: the next batch runs in a new loop

    result = run_sync(_answer())
    records: list[Any] = [*result.samples, *result.decisions]
    if student and result.samples:
        stored = store.query(queries.STORED_SAMPLES, [[s.id for s in result.samples]])
        keep = {r["id"] for r in stored if r["method"] != STUDENT_METHOD}
        records += student_exclusions(result.samples, keep, run_id=run_id)
    store.ingest(records)
    return result.samples


@task(name="lion-train", task_run_name="it{iteration}-train", cache_policy=NO_CACHE)
def train_student(iteration: int, config: TrainConfig, store: Store, dataset: str, version: int,
                  run_name: str) -> dict[str, Any]:
    """``training.train.train`` on the iteration's dataset version, with progress."""
    from training.train import train

    progress = Progress(artifact_key("lion", run_name, f"it{iteration}", "train"), "Training steps",
                        stage=f"it{iteration} {TRAINING}", min_interval_s=2.0)

    def on_progress(info: dict[str, Any]) -> None:
        total = info.get("total") or 0
        progress.update(info.get("step", 0), total or 1, loss=info.get("loss"),
                        description=f"step {info.get('step')}/{total}, loss {info.get('loss')}")

    result = train(config, store=store, dataset=dataset, version=version, on_progress=on_progress,
                   show_progress=False, flow_run_id=prefect_flow_run_id())
    progress.finish()
    return {"id": result.run_id, "checkpoint": result.checkpoint, "student": result.student_init,
            "final_loss": result.final_loss}


@task(name="lion-evaluate", task_run_name="it{iteration}-evaluate", cache_policy=NO_CACHE)
def evaluate_students(iteration: int, models: dict[str, str], items: list[dict], teacher_weights: str | None,
                      config: EvalConfig, store: Store, dataset: str, run_id: str, run_ids: dict[str, str]) -> int:
    """Every model answers the held-out prompts; the numbers go to ``evaluations``."""
    from training.evaluate import evaluate_models, record_evaluations

    results = evaluate_models(models, items, teacher=teacher_weights, config=config, run_ids=run_ids)
    return record_evaluations(store, results, dataset_name=dataset, dataset_version=iteration, split="heldout",
                              run_id=run_id)


@task(name="lion-referee", task_run_name="it{iteration}-referee-{index}", cache_policy=NO_CACHE)
def judge_batch(iteration: int, index: int, pairs: list[LionPair], referee: Teacher, params: LionParams,
                store: Store, run_id: str) -> dict[str, int]:
    """The referee on one batch of pairs; its ``lion_judgments`` rows stored at once."""
    async def _judge():
        try:
            return await adiscriminate(referee, pairs, params, iteration=iteration, run_id=run_id,
                                       flow_run_id=prefect_flow_run_id())
        finally:
            await referee.adetach()

    judgments = run_sync(_judge())
    # A verdict whose requests failed (the referee did not answer) is not a verdict: it is
    # not stored, so the next run judges that pair (its failed requests are sent again).
    # One the referee answered without two scores is stored failed, and not asked again.
    answered = [j for j in judgments if not unanswered(j)]
    store.ingest(answered)
    return {"judged": sum(j.ok for j in answered), "failed": sum(not j.ok for j in answered),
            "hard": sum(j.label == "hard" for j in answered), "easy": sum(j.label == "easy" for j in answered),
            "unanswered": len(judgments) - len(answered)}


@task(name="lion-generate", task_run_name="it{iteration}-generate-{index}", cache_policy=NO_CACHE)
def generate_batch(iteration: int, index: int, seeds: list[LionSeed], generator: Teacher, params: LionParams,
                   novelty: RougeNovelty, known_ids: set[str], store: Store, run_id: str) -> dict[str, int]:
    """New instructions from one batch of seeds; the kept ones join both pools."""
    async def _generate():
        try:
            return await agenerate_instructions(generator, seeds, params, novelty=novelty, iteration=iteration,
                                                known_ids=known_ids, run_id=run_id)
        finally:
            await generator.adetach()

    result = run_sync(_generate())
    known_ids.update(i.id for i in result.instructions)
    flow_run = prefect_flow_run_id()
    pool = [LionPoolEntry(run_id=run_id, pool=name, instruction_id=i.id, iteration=iteration, origin=i.operator,
                          seed_id=i.parent_id, flow_run_id=flow_run)
            for i in result.instructions for name in ("train", "cache")]
    store.ingest([*result.instructions, *result.rejected, *result.decisions, *pool])
    return result.counts


# --------------------------------------------------------------------------- the loop


class LionLoop:
    """One Lion run's state between steps: the store, the config and the teachers."""

    def __init__(self, store: Store, config: LionConfig, run_name: str, run_id: str, logger) -> None:
        self.store = store
        self.config = config
        self.params = config.loop
        self.run_name = run_name
        self.run_id = run_id
        self.logger = logger
        self.dataset = f"lion-{run_name}"
        self._teachers: dict[str, Teacher] = {}
        self.teacher = self._built(config.teacher)
        self.referee = self._built(config.referee or config.teacher)
        self.generator = self._built(config.generator or config.teacher)
        weights = config.teacher.weights
        self.teacher_weights = str(model_folder(weights)) if weights else None
        # Read now, so that a bad held-out file fails the run before any work, not after training.
        heldout = config.heldout
        self.heldout = eval_items(jsonl=heldout.file, max_prompts=heldout.size) if heldout.enabled else []

    def _built(self, config: TeacherConfig) -> Teacher:
        """The ledgered teacher of ``config``; the same config is one model in memory."""
        key = canonical_json(config.model_dump(mode="json"))
        if key not in self._teachers:
            self._teachers[key] = build_teacher(config, self.store, run_id=self.run_id)
        return self._teachers[key]

    def close(self) -> None:
        for teacher in self._teachers.values():
            teacher.close()

    def _progress(self, iteration: int, step: str, description: str, total: int) -> Progress:
        """A step's progress artifact and terminal bar, shown from the step's start."""
        progress = Progress(artifact_key("lion", self.run_name, f"it{iteration}", step), description,
                            stage=f"it{iteration} {step}")
        progress.update(0, max(total, 1))
        return progress

    # -- pools -------------------------------------------------------------------------

    def seed_pools(self) -> dict[str, int]:
        """The pool files' instructions, stored and in both pools at iteration 0 (idempotent)."""
        files = {"train": self.config.pools.train, "cache": self.config.pools.cache or self.config.pools.train}
        records: list[Any] = []
        sizes = {}
        flow_run = prefect_flow_run_id()
        for pool, path in files.items():
            instructions = parse_instructions_file(path)
            sizes[pool] = len({i.id for i in instructions})
            records += instructions
            records += [LionPoolEntry(run_id=self.run_id, pool=pool, instruction_id=i.id, iteration=0, origin="seed",
                                      flow_run_id=flow_run) for i in instructions]
        self.store.ingest(records)
        return sizes

    def pool(self, name: str, iteration: int) -> list[Instruction]:
        """The pool as iteration ``iteration`` sees it (what joined before it)."""
        rows = self.store.query(queries.LION_POOL, [self.run_id, name, iteration])
        parsed = [_parsed(r, "sampling_params", "metadata") for r in rows]
        return [Instruction(**{**r, "metadata": r["metadata"] or {}}) for r in parsed]

    # -- steps -------------------------------------------------------------------------

    def answer(self, iteration: int, step: str, teacher: Teacher, instructions: Sequence[Instruction], *,
               student: bool = False) -> dict[str, Sample]:
        """Answers to ``instructions`` in batches (a task each); by instruction id."""
        progress = self._progress(iteration, step, f"Iteration {iteration}: {step}", len(instructions))
        size = self.config.answer_batch_size
        out: dict[str, Sample] = {}
        for k in range(0, len(instructions), size):
            batch = list(instructions[k:k + size])
            samples = answer_batch(iteration, "student" if student else "teacher", k // size + 1, quote(batch),
                                   quote(teacher), self.params, quote(self.store), self.run_id)
            for s in samples:
                out.setdefault(s.instruction_id, s)
            progress.update(min(k + size, len(instructions)), len(instructions))
        progress.finish()
        return out

    def freeze_dataset(self, iteration: int) -> int:
        """Version ``iteration`` of dataset lion-<run_name>: the teacher's answers to the
        Train Pool (created once; a resumed run reuses it)."""
        if self.store.query(queries.DATASET_VERSION, [self.dataset, iteration]):
            return iteration
        latest = self.store.query(queries.DATASET_VERSIONS, [self.dataset])[0]["latest"]
        if latest != iteration - 1:
            raise InputError(f"dataset {self.dataset} is at version {latest}, but Lion iteration {iteration} "
                             f"freezes version {iteration}: another process made versions of it; use another "
                             "run_name")
        sql = queries.LION_TRAIN_DATA.format(run_id=queries.sql_literal(self.run_id), iteration=int(iteration),
                                             teacher_model=queries.sql_literal(self.teacher.model))
        n = self.store.query(queries.COUNT_ROWS.format(sql=sql))[0]["n"]
        if n == 0:
            raise TeacherError(f"Lion iteration {iteration}: the teacher ({self.teacher.model}) answered none of "
                               "the Train Pool's instructions; check the teacher (its failed requests are in the "
                               "requests table) and re-run the same run_name")
        info = create_dataset(self.store, self.dataset, sql, eval_fraction=0.0, run_id=self.run_id)
        return info.version

    def train(self, iteration: int, version: int, previous: str | None) -> dict[str, Any]:
        """Train iteration ``iteration``'s student, unless a finished run of its name exists."""
        name = f"lion-{self.run_name}-it{iteration}"
        done = self.store.query(queries.LION_TRAINING_RUN, [name])
        if done:
            row = done[0]
            if not row["checkpoint_path"] or not (Path(row["checkpoint_path"]) / "config.json").exists():
                raise InputError(f"training run {name} finished, but its checkpoint {row['checkpoint_path']} is "
                                 "gone: restore it, or delete that training_runs row to train again")
            self.logger.info("iteration %d: %s already trained (%s)", iteration, name, row["checkpoint_path"])
            return {"id": row["id"], "checkpoint": row["checkpoint_path"], "student": row["student"],
                    "final_loss": row["final_loss"]}
        update: dict[str, Any] = {"name": name,
                                  "output_dir": str(Path(self.config.train.output_dir) / self.run_name
                                                    / f"it{iteration}")}
        if previous is not None:
            update["student"] = previous
        config = self.config.train.model_copy(update=update)
        return train_student(iteration, config, quote(self.store), self.dataset, version, self.run_name)

    def evaluate(self, iteration: int, trained: dict[str, Any]) -> None:
        """The held-out evaluation of the iteration's student (and, at iteration 1, of the
        student before training), unless those numbers are stored already."""
        heldout = self.config.heldout
        if not heldout.enabled:
            return
        models = {student_label(iteration): trained["checkpoint"]}
        if iteration == 1 and heldout.before:
            models[BEFORE] = trained["student"]
        done = {r["model_label"] for r in self.store.query(queries.LION_EVALUATED,
                                                           [self.run_id, self.dataset, iteration])}
        models = {label: path for label, path in models.items() if label not in done}
        progress = self._progress(iteration, EVALUATION, f"Iteration {iteration}: held-out evaluation", 1)
        if models:
            # Asked the way the student trained: under the system prompt.
            items = [{**item, "system_prompt": self.params.system_prompt} for item in self.heldout]
            self._teacher_references(items)
            config = EvalConfig(max_new_tokens=heldout.max_new_tokens, batch_size=heldout.batch_size)
            evaluate_students(iteration, models, items, self.teacher_weights, config, quote(self.store),
                              self.dataset, self.run_id, {student_label(iteration): trained["id"]})
        progress.finish()

    def _teacher_references(self, items: list[dict]) -> None:
        """The teacher's greedy answers to the held-out prompts (through the ledger: paid
        once across iterations and resumes), as the references ROUGE-L and KL use."""
        config = ResponsesConfig(system_prompt=self.params.system_prompt, request_format=self.params.request_format,
                                 temperature=0.0, max_tokens=self.config.heldout.max_new_tokens, keep_truncated=True)
        prompts = [Instruction(text=it["instruction"], input=it["input"], method="seed") for it in items]

        async def _ask():
            try:
                return await agenerate_responses(self.teacher, prompts, config, run_id=self.run_id)
            finally:
                await self.teacher.adetach()

        answers = {s.instruction_id: s.response for s in run_sync(_ask()).samples}
        for item, prompt in zip(items, prompts):
            if not item.get("teacher_response"):
                item["teacher_response"] = answers.get(prompt.id)

    def discriminate(self, iteration: int, student: Teacher, cache: Sequence[Instruction]) -> None:
        """Teacher and student answer the Cache Pool; the referee judges every pair not judged yet."""
        teacher_answers = self.answer(iteration, TEACHER_ANSWERS, self.teacher, cache)
        judged = {r["instruction_id"] for r in self.store.query(queries.LION_JUDGED_IDS, [self.run_id, iteration])}
        todo = [i for i in cache if i.id not in judged and i.id in teacher_answers]
        student_answers = self.answer(iteration, STUDENT_ANSWERS, student, todo, student=True)
        pairs = [LionPair(i, teacher_answers[i.id], student_answers[i.id]) for i in todo if i.id in student_answers]
        if len(pairs) < len(todo):
            self.logger.warning("iteration %d: %d Cache Pool instructions have no answer from the student",
                                iteration, len(todo) - len(pairs))
        progress = self._progress(iteration, REFEREE, f"Iteration {iteration}: pairs judged", len(pairs))
        size = self.config.judge_batch_size
        missing = 0
        for k in range(0, len(pairs), size):
            out = judge_batch(iteration, k // size + 1, quote(pairs[k:k + size]), quote(self.referee), self.params,
                              quote(self.store), self.run_id)
            self.logger.info("iteration %d, referee batch %d: %s", iteration, k // size + 1, out)
            missing += out["unanswered"]
            progress.update(min(k + size, len(pairs)), len(pairs))
        progress.finish()
        if missing:  # before generation builds on an incomplete set of verdicts
            raise TeacherError(f"Lion iteration {iteration}: the referee ({self.referee.model}) did not answer "
                               f"{missing} of {len(pairs)} pairs (its failed requests and their errors are in "
                               "the requests table); the verdicts it gave are stored: re-run the same run_name "
                               "to judge the rest")

    def generate(self, iteration: int, cache: Sequence[Instruction], train: Sequence[Instruction]) -> dict[str, int]:
        """New instructions from this iteration's hard and easy ones; the kept ones join the pools."""
        judgments = [LionJudgment(**r) for r in self.store.query(queries.LION_JUDGMENTS, [self.run_id, iteration])]
        seeds = pick_seeds(judgments, {i.id: i for i in cache}, self.params,
                           rng_for(self.run_name, f"lion-it{iteration}"))
        novelty = RougeNovelty(self.params.rouge_threshold)
        novelty.extend(i.text for i in cache)
        known = {i.id for i in (*cache, *train)}
        progress = self._progress(iteration, GENERATION, f"Iteration {iteration}: new instructions asked for",
                                  len(seeds))
        counts: dict[str, int] = {}
        size = self.config.answer_batch_size
        for k in range(0, len(seeds), size):
            out = generate_batch(iteration, k // size + 1, quote(seeds[k:k + size]), quote(self.generator),
                                 self.params, quote(novelty), quote(known), quote(self.store), self.run_id)
            for name, n in out.items():
                counts[name] = counts.get(name, 0) + n
            progress.update(min(k + size, len(seeds)), len(seeds))
        progress.finish()
        if seeds and counts.get("failed", 0) == len(seeds):
            raise TeacherError(f"Lion iteration {iteration}: every one of the {len(seeds)} generation requests to "
                               f"{self.generator.model} failed (see the requests table); re-run the same run_name "
                               "once it answers")
        if counts.get("failed"):
            self.logger.warning("iteration %d: %d of %d generation requests failed", iteration, counts["failed"],
                                len(seeds))
        return counts

    # -- one iteration -----------------------------------------------------------------

    def iteration(self, iteration: int, previous: LionIteration | None) -> LionIteration:
        started = time.monotonic()
        train_pool, cache = self.pool("train", iteration), self.pool("cache", iteration)
        self.logger.info("iteration %d: Train Pool %d, Cache Pool %d", iteration, len(train_pool), len(cache))

        # 1. Imitation: the teacher answers the Train Pool; the student learns from it.
        self.answer(iteration, IMITATION, self.teacher, train_pool)
        version = self.freeze_dataset(iteration)
        trained = self.train(iteration, version, previous.checkpoint if previous else None)
        self.evaluate(iteration, trained)

        # 2. Discrimination: both answer the Cache Pool; the referee finds the hard ones.
        student = build_teacher(self.config.student.model_copy(update={
            "model_path": trained["checkpoint"], "model": student_model(self.run_name, iteration)}),
            self.store, run_id=self.run_id)
        try:
            self.discriminate(iteration, student, cache)
        finally:
            student.close()  # frees the model, or stops its vLLM server

        # 3. Generation: new instructions from hard and easy ones join both pools.
        counts = self.generate(iteration, cache, train_pool)

        # 4. The iteration's row, written last: the run resumes after it.
        row = self._row(iteration, previous, len(train_pool), len(cache), version, trained, counts,
                        time.monotonic() - started)
        self.store.ingest([row])
        reports.publish_lion_iteration(self.store, self.run_name, row, counts)
        return row

    def _row(self, iteration: int, previous: LionIteration | None, n_train: int, n_cache: int, version: int,
             trained: dict[str, Any], counts: dict[str, int], elapsed: float) -> LionIteration:
        s = self.store.query(queries.LION_JUDGMENT_SUMMARY, [self.run_id, iteration])[0]
        generated = {r["origin"]: r["n"] for r in self.store.query(queries.LION_GENERATED, [self.run_id, iteration])}
        evals: dict[str, dict[str, float]] = {}
        for r in self.store.query(queries.LION_EVALUATIONS, [self.run_id, self.dataset, iteration]):
            evals.setdefault(r["model_label"], {})[r["metric"]] = r["value"]
        mine = evals.get(student_label(iteration), {})
        since = previous.created_at if previous else None
        tokens = {r["model"]: int(r["tokens"]) for r in self.store.query(queries.RUN_TOKENS_SINCE,
                                                                          [self.run_id, since, since])}
        return LionIteration(
            run_id=self.run_id, run_name=self.run_name, iteration=iteration, train_pool=n_train, cache_pool=n_cache,
            judged=s["judged"], failed=s["failed"], hard=s["hard"], easy=s["easy"],
            mean_teacher_score=s["mean_teacher_score"], mean_student_score=s["mean_student_score"],
            mean_gap=s["mean_gap"], generated=sum(generated.values()), generated_hard=generated.get("hard", 0),
            generated_easy=generated.get("easy", 0),
            dropped=sum(n for k, n in counts.items() if k.startswith("dropped_")),
            dataset_name=self.dataset, dataset_version=version, training_run_id=trained["id"],
            checkpoint=trained["checkpoint"], eval=evals, rougeL_teacher=mine.get("rougeL_teacher"),
            kl_teacher_student=mine.get("kl_teacher_student"), elapsed_s=round(elapsed, 2),
            tokens=sum(tokens.values()), tokens_by_model=tokens, flow_run_id=prefect_flow_run_id())


@flow(name="lion", flow_run_name=flow_run_name("lion"), log_prints=True)
def lion_flow(config: LionConfig = LionConfig(), iterations: int | None = None) -> dict[str, Any]:
    """Run Lion's loop until ``iterations`` (default ``config.iterations``) iterations are finished.

    Args:
        config: the whole Lion config (flows/config.py ``LionConfig``): teacher, referee,
            generator, student backend, training, pools, held-out evaluation, loop knobs.
        iterations: how many iterations the run should have finished (overrides the config's).
    """
    logger = get_run_logger()
    run_name = resolve_run_name(config.run_name)
    total = iterations or config.iterations
    store = Store(config.db)
    store.init()
    run_config = {**config.safe_dump(), "run_name": run_name, "iterations": total}
    weights = config.teacher.weights
    # teacher_weights: the lineage training reads to find the data's teacher (training/train.py).
    run_config["teacher_weights"] = str(model_folder(weights)) if weights else None
    rows: list[LionIteration] = []
    with recorded_run(store, "lion", run_name, run_config) as run:
        done = {r["iteration"]: LionIteration(**_parsed(r, "eval", "tokens_by_model"))
                for r in store.query(queries.LION_ITERATIONS, [run.id])}
        loop = LionLoop(store, config, run_name, run.id, logger)
        try:
            sizes = loop.seed_pools()
            logger.info("lion %s: pool files hold %d (train) and %d (cache) instructions; %d iterations finished "
                        "before", run_name, sizes["train"], sizes["cache"], len(done))
            previous = None
            for i in range(1, total + 1):
                if i in done:
                    previous = done[i]
                    rows.append(previous)
                    continue
                previous = loop.iteration(i, previous)
                rows.append(previous)
                logger.info("lion %s iteration %d: %s", run_name, i, _brief(previous))
        finally:
            loop.close()
        summary = {"run_name": run_name, "run_id": run.id, "db": str(store.path),
                   "iterations": [r.model_dump(mode="json") for r in rows],
                   "message": (f"{len(rows)} iteration(s) finished ({len(rows) - len(done)} in this session): "
                               + "; ".join(f"it{r.iteration}: {_brief(r)}" for r in rows))}
        run.finish("completed", {"iterations": [_counts(r) for r in rows]})
    logger.info("lion %s: %s", run_name, summary["message"])
    return summary


def _counts(row: LionIteration) -> dict[str, Any]:
    return {k: v for k, v in row.model_dump(mode="json").items() if k not in ("eval", "tokens_by_model", "run_id")}


def _brief(row: LionIteration) -> str:
    gap = "-" if row.mean_gap is None else f"{row.mean_gap:+.2f}"
    return (f"{row.hard} hard, {row.easy} easy, {row.failed} failed verdicts (mean gap {gap}); "
            f"{row.generated} new instructions")
