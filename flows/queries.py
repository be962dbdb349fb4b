"""Every SQL statement the flows run, in one place, with bound parameters.

Queries build on the views of storage/migrations (``sample_view``, ``kept_samples``,
``dropped_items``, ``run_drops``, ``pairwise_standings``), so a predicate like "no filter
dropped it" is written once, in SQL.
Values (run ids, names, versions) are always bound (``?``), never formatted into the
text; ``for_display`` renders a query with its values inlined, for the SQL a report
shows next to a number so it can be pasted into ``distill sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# -- the work a generate run starts from ------------------------------------------------

SEED_INSTRUCTIONS = "SELECT * FROM instructions WHERE method = 'seed' AND operator IS NULL ORDER BY id"
# What Evol-Instruct evolves: seed tasks and evolutions that no filter dropped and that no
# other run evolved further yet (a scheduled run grows the chains its predecessors left).
EVOLVABLE = """
SELECT i.* FROM instructions i ANTI JOIN dropped_items d ON d.item_id = i.id
WHERE ((i.method = 'seed' AND i.operator IS NULL) OR i.method = 'evol_instruct')
  AND coalesce(i.run_id, '') <> ?
  AND NOT EXISTS (SELECT 1 FROM instructions c ANTI JOIN dropped_items dc ON dc.item_id = c.id
                  WHERE c.parent_id = i.id AND c.method = 'evol_instruct' AND coalesce(c.run_id, '') <> ?)
ORDER BY i.id"""
# The tasks Self-Instruct kept in other runs (its pool grows run after run), oldest first,
# and their answers (Alpaca shows a task's output in its demonstrations).
POOL_TASKS = """
SELECT i.* FROM instructions i ANTI JOIN dropped_items d ON d.item_id = i.id
WHERE i.method = ? AND i.parent_id IS NULL AND coalesce(i.run_id, '') <> ?
ORDER BY i.created_at, i.id"""
POOL_OUTPUTS = """
SELECT s.* FROM samples s
WHERE s.instruction_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY s.created_at, s.id"""
INSTRUCTIONS_BY_ID = "SELECT * FROM instructions WHERE id IN (SELECT unnest(?::VARCHAR[])) ORDER BY id"
# Instructions without a sample from this teacher made by another run (this run's own
# samples are replayed through the ledger), and not dropped by any filter. With ids given
# (an instructions file, instructions_sql), only those are candidates.
UNANSWERED = """
SELECT i.* FROM instructions i ANTI JOIN dropped_items d ON d.item_id = i.id
WHERE NOT EXISTS (
    SELECT 1 FROM samples s
    WHERE s.instruction_id = i.id AND s.teacher_model = ? AND coalesce(s.run_id, '') <> ?
)
AND (?::VARCHAR[] IS NULL OR i.id IN (SELECT unnest(?::VARCHAR[])))
ORDER BY i.id"""

# -- generate ---------------------------------------------------------------------------

# What a run already spent (requests it sent, tokens) before this session: resume keeps budgets.
RUN_SPENT = """
SELECT count(*) AS requests,
       coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0) AS tokens
FROM requests WHERE run_id = ?"""
# Which of these samples another run stored already (they are that run's, not this one's).
OTHER_RUNS_SAMPLES = """
SELECT id FROM samples WHERE id IN (SELECT unnest(?::VARCHAR[])) AND coalesce(run_id, '') <> ?"""
RUN_KEPT = "SELECT count(*) AS n FROM kept_samples WHERE run_id = ?"
RUN_REQUESTS = "SELECT status, count(*) AS n FROM requests WHERE run_id = ? GROUP BY 1 ORDER BY 1"
RUN_FAILURES = """
SELECT error, count(*) AS n FROM requests WHERE run_id = ? AND status = 'failed' GROUP BY 1 ORDER BY n DESC"""
RUN_DROPS = "SELECT filter, reason, n FROM run_drops WHERE run_id = ? ORDER BY n DESC, filter, reason"
RUN_KEPT_LENGTHS = """
SELECT len(string_split(trim(instruction), ' ')) AS instruction_words,
       len(string_split(trim(response), ' ')) AS response_words
FROM kept_samples WHERE run_id = ?"""

# -- filters (flows/filtering.py) ------------------------------------------------------

# Samples other runs kept that one of these filters judged: the filters' pools.
KEPT_POOL = """
SELECT sample_id, instruction_id, instruction FROM kept_samples k
WHERE EXISTS (SELECT 1 FROM filter_decisions d
              WHERE d.item_id = k.sample_id AND d.filter IN (SELECT unnest(?::VARCHAR[])))
  AND coalesce(k.run_id, '') <> ?"""
MINHASH_SIGNATURES = """
SELECT m.item_id, m.config, m.signature FROM minhash_signatures m
WHERE m.config = ?
  AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.id = m.item_id AND coalesce(s.run_id, '') = ?)"""

# -- curate -----------------------------------------------------------------------------

# Samples (all, or one generate run's) with the filters that already judged them.
CURATE_CANDIDATES = """
SELECT s.sample_id, s.instruction_id, s.instruction, s.input, s.response, s.run_id, s.created_at,
       list(d.filter) FILTER (WHERE d.filter IS NOT NULL) AS judged,
       coalesce(bool_or(NOT d.kept), false) AS dropped,
       max(d.score) FILTER (WHERE d.filter = 'judge') AS judge_score
FROM sample_view s LEFT JOIN filter_decisions d ON d.item_id = s.sample_id
WHERE (? IS NULL OR s.run_id = ?)
GROUP BY ALL
ORDER BY s.created_at, s.sample_id"""
# Kept samples the LLM judge has not scored yet, oldest first.
JUDGE_CANDIDATES = """
SELECT sample_id, instruction, input, response FROM kept_samples k
WHERE (? IS NULL OR k.run_id = ?)
  AND NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = k.sample_id AND d.filter = 'judge')
ORDER BY created_at, sample_id"""
RUN_REQUESTS_SENT = "SELECT count(*) AS n FROM requests WHERE run_id = ?"
RUN_JUDGE_VERDICTS = """
SELECT reason, kept, count(*) AS n, round(avg(score), 2) AS mean_score FROM filter_decisions
WHERE run_id = ? AND filter = 'judge' GROUP BY ALL ORDER BY kept DESC, reason"""
# curate.compare: per instruction, the earliest stored answer of source a and of source b
# (samples.teacher_model; bound twice: a, b), paired.
_COMPARE_PAIRS = """
WITH firsts AS (
    SELECT sample_id, instruction_id, instruction, input, response, teacher_model, created_at
    FROM sample_view WHERE teacher_model IN (?, ?)
    QUALIFY row_number() OVER (PARTITION BY instruction_id, teacher_model ORDER BY created_at, sample_id) = 1
)
SELECT a.instruction_id, a.instruction, a.input, a.sample_id AS sample_a, a.response AS response_a,
       b.sample_id AS sample_b, b.response AS response_b
FROM firsts a JOIN firsts b ON b.instruction_id = a.instruction_id
WHERE a.teacher_model = ? AND b.teacher_model = ?"""
# How many instructions both sources answered (params: a, b, a, b).
COMPARE_PAIR_COUNT = f"SELECT count(*) AS n FROM ({_COMPARE_PAIRS})"
# The pairs this judge has not judged yet, oldest first (params: a, b, a, b, judge model).
COMPARE_CANDIDATES = _COMPARE_PAIRS + """
  AND NOT EXISTS (SELECT 1 FROM pairwise_judgments p
                  WHERE p.sample_a = a.sample_id AND p.sample_b = b.sample_id AND p.judge_model = ?)
ORDER BY greatest(a.created_at, b.created_at), a.instruction_id"""
RUN_PAIRWISE_VERDICTS = """
SELECT model_a, model_b, judge_model, winner, ok, count(*) AS n, round(avg(score_a), 2) AS mean_a,
       round(avg(score_b), 2) AS mean_b
FROM pairwise_judgments WHERE run_id = ? GROUP BY ALL ORDER BY ALL"""
PAIRWISE_STANDINGS = """
SELECT pairs, a_wins, b_wins, ties, failed, round(mean_a, 2) AS mean_a, round(mean_b, 2) AS mean_b
FROM pairwise_standings WHERE model_a = ? AND model_b = ? AND judge_model = ?"""
COUNT_ROWS = "SELECT count(*) AS n FROM ({sql})"  # {sql}: a dataset SELECT, validated as one SELECT
NEW_DATASET_ROWS = """
SELECT count(*) AS n FROM dataset_items a
WHERE a.dataset_name = ? AND a.version = ?
  AND NOT EXISTS (SELECT 1 FROM dataset_items b
                  WHERE b.dataset_name = a.dataset_name AND b.version = ? AND b.row_key = a.row_key)"""
DATASET_VERSION = "SELECT * FROM datasets WHERE name = ? AND version = ?"
LATEST_VERSION = "SELECT max(version) AS version FROM datasets WHERE name = ?"
DATASET_LENGTHS = """
SELECT len(string_split(trim(instruction), ' ')) AS instruction_words,
       len(string_split(trim(response), ' ')) AS response_words
FROM dataset_items WHERE dataset_name = ? AND version = ?"""

# -- train ------------------------------------------------------------------------------

RUN_EVALUATIONS = """
SELECT model_label, metric, round(value, 4) AS value, n FROM evaluations WHERE run_id = ? ORDER BY id"""
TRAINING_RUN = "SELECT id, method, final_loss, checkpoint_path, status FROM training_runs WHERE id = ?"

# -- lion -------------------------------------------------------------------------------

# A pool of a Lion run as iteration i sees it: what joined before it (params: run id,
# 'train' | 'cache', i), in a stable order (the same on a resume).
LION_POOL = """
SELECT i.* FROM lion_pool p JOIN instructions i ON i.id = p.instruction_id
WHERE p.run_id = ? AND p.pool = ? AND p.iteration < ?
ORDER BY p.iteration, i.id"""
LION_ITERATIONS = "SELECT * FROM lion_iterations WHERE run_id = ? ORDER BY iteration"
LION_JUDGED_IDS = "SELECT instruction_id FROM lion_judgments WHERE run_id = ? AND iteration = ?"
LION_JUDGMENTS = "SELECT * FROM lion_judgments WHERE run_id = ? AND iteration = ? ORDER BY instruction_id"
LION_JUDGMENT_SUMMARY = """
SELECT count(*) FILTER (WHERE ok) AS judged, count(*) FILTER (WHERE NOT ok) AS failed,
       count(*) FILTER (WHERE label = 'hard') AS hard, count(*) FILTER (WHERE label = 'easy') AS easy,
       avg(teacher_score) AS mean_teacher_score, avg(student_score) AS mean_student_score, avg(gap) AS mean_gap
FROM lion_judgments WHERE run_id = ? AND iteration = ?"""
# What iteration i added to the pools, by origin (params: run id, i).
LION_GENERATED = """
SELECT origin, count(*) AS n FROM lion_pool
WHERE run_id = ? AND pool = 'train' AND iteration = ? GROUP BY origin ORDER BY origin"""
# Samples already stored under these ids, with their method (a student's answer word for
# word another's is that sample, and is not the student's alone).
STORED_SAMPLES = "SELECT id, method FROM samples WHERE id IN (SELECT unnest(?::VARCHAR[]))"
# The training run of one iteration (training_runs.name = lion-<run>-it<i>), if it finished.
LION_TRAINING_RUN = """
SELECT id, status, student, teacher, checkpoint_path, final_loss FROM training_runs
WHERE name = ? AND status IN ('completed', 'diverged') ORDER BY ended_at DESC LIMIT 1"""
LION_EVALUATED = """
SELECT DISTINCT model_label FROM evaluations WHERE run_id = ? AND dataset_name = ? AND dataset_version = ?"""
LION_EVALUATIONS = """
SELECT model_label, metric, value, n FROM evaluations
WHERE run_id = ? AND dataset_name = ? AND dataset_version = ? ORDER BY id"""
DATASET_VERSIONS = "SELECT coalesce(max(version), 0) AS latest FROM datasets WHERE name = ?"
# The tokens a run's requests paid for since a moment (params: run id, since or NULL), per model.
RUN_TOKENS_SINCE = """
SELECT model, coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0) AS tokens
FROM requests WHERE run_id = ? AND (?::TIMESTAMP IS NULL OR created_at > ?::TIMESTAMP)
GROUP BY model ORDER BY model"""
LION_SCORES = """
SELECT teacher_score, student_score, gap, label FROM lion_judgments
WHERE run_id = ? AND iteration = ? AND ok ORDER BY instruction_id"""
LION_ITERATION = "SELECT * FROM lion_iterations WHERE run_id = ? AND iteration = ?"
# Verdicts that never named two scores: the first line of each order's raw text (ab: the
# teacher's answer shown first, ba: the student's), where the scores belong.
LION_FAILED_VERDICTS = """
SELECT left(split_part(ab_text, chr(10), 1), 60) AS ab_first_line,
       left(split_part(ba_text, chr(10), 1), 60) AS ba_first_line, error
FROM lion_judgments WHERE run_id = ? AND iteration = ? AND NOT ok
ORDER BY instruction_id LIMIT 5"""
LION_THRESHOLD = "SELECT max(threshold) AS t FROM lion_judgments WHERE run_id = ? AND iteration = ?"
LION_DROPS = """
SELECT d.filter, d.reason, count(*) AS n FROM filter_decisions d
JOIN instructions i ON i.id = d.item_id
WHERE i.method = 'lion' AND i.round = ? AND d.run_id = ? AND NOT d.kept
GROUP BY ALL ORDER BY n DESC, d.filter, d.reason"""
# The imitation data of iteration {iteration}: the teacher's answer (one per instruction,
# the earliest) to every Train Pool instruction that joined before it, that no filter
# dropped. Stored with the dataset version and re-run as is, so values are literals.
LION_TRAIN_DATA = """SELECT s.sample_id, s.instruction, s.input, s.response, s.system_prompt
FROM kept_samples s
JOIN lion_pool p ON p.instruction_id = s.instruction_id
WHERE p.run_id = {run_id} AND p.pool = 'train' AND p.iteration < {iteration}
  AND s.teacher_model = {teacher_model}
QUALIFY row_number() OVER (PARTITION BY s.instruction_id ORDER BY s.created_at, s.sample_id) = 1
ORDER BY s.sample_id"""


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal (strings quoted, quotes doubled)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def for_display(sql: str, params: Sequence[Any] = ()) -> str:
    """The query with its ``?`` placeholders replaced by literals, for a human to paste
    into ``distill sql`` (never executed by the flows: they bind)."""
    parts = sql.strip().split("?")
    if len(parts) - 1 != len(params):
        raise ValueError(f"{len(parts) - 1} placeholders, {len(params)} values")
    out = [parts[0]]
    for value, part in zip(params, parts[1:]):
        out += [sql_literal(value), part]
    return "".join(out)
