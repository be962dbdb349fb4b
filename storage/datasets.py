"""Named, immutable, numbered dataset versions, and their exports.

A dataset version is the frozen result of a SELECT: its rows are copied into
``dataset_items`` (not referenced), split into train/eval with a seed, counted and
hashed, so version 3 of "alpaca-clean" means the same rows forever, whatever happens
to ``samples`` afterwards.

    info = create_dataset(store, "alpaca-clean",
                          "SELECT sample_id, instruction, input, response FROM sample_view")
    rows = load_rows(store, "alpaca-clean", split="train")
    export_dataset(store, "alpaca-clean", info.version, "jsonl-chat", "out/")

In exports the user turn is ``core.text.format_prompt`` (the text the teacher answered,
and the one training prompts with); a rationale row answers with its reasoning first
(chat and prompt/completion); ``step_by_step_examples`` is distilling step-by-step's two
tasks of a row, which the ``jsonl-step-by-step`` export writes and
``training/distill_step_by_step.py`` trains on.

The split of a row is a function of (seed, row key) alone, so a row keeps its split
across versions: when version 2 adds samples to version 1, nothing from version 1's
eval split leaks into version 2's train split.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import InputError, NotFoundError
from core.text import format_prompt, render_answer
from storage.records import canonical_json, content_key, normalize_text, utcnow
from storage.store import Store, code_version, scalar

REQUIRED_COLUMNS = ("instruction", "response")
OPTIONAL_COLUMNS = ("input", "rationale", "label", "system_prompt", "sample_id")
ROW_COLUMNS = ("instruction", "input", "response", "rationale", "label", "system_prompt", "sample_id", "split")
"""Keys of the dicts ``load_rows`` returns, in order."""

ExportFormat = Literal["parquet", "jsonl-chat", "jsonl-prompt", "jsonl-step-by-step", "hf"]
EXPORT_FORMATS: tuple[str, ...] = ("parquet", "jsonl-chat", "jsonl-prompt", "jsonl-step-by-step", "hf")
SPLITS = ("train", "eval")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# --- SQL used at run time -------------------------------------------------------------

NEXT_VERSION_SQL = "SELECT coalesce(max(version), 0) + 1 FROM datasets WHERE name = ?"
INSERT_DATASET_SQL = """
INSERT INTO datasets (name, version, sql, n_rows, n_train, n_eval, eval_fraction, seed,
                      content_hash, columns, code_version, run_id, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
INSERT_ITEMS_SQL = """
INSERT INTO dataset_items (dataset_name, version, idx, split, row_key, sample_id, instruction,
                           input, response, rationale, label, system_prompt, extra)
SELECT dataset_name, version, idx, split, row_key, sample_id, instruction,
       input, response, rationale, label, system_prompt, extra
FROM _dataset_items"""
DATASET_SQL = "SELECT * FROM datasets WHERE name = ? AND version = ?"
LATEST_DATASET_SQL = "SELECT * FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 1"
LIST_DATASETS_SQL = "SELECT * FROM datasets ORDER BY name, version"
DATASET_VERSIONS_SQL = "SELECT version FROM datasets WHERE name = ? ORDER BY version"
ITEMS_SQL = """
SELECT instruction, input, response, rationale, label, system_prompt, sample_id, split
FROM dataset_items
WHERE dataset_name = ? AND version = ? AND (? IS NULL OR split = ?)
ORDER BY idx"""


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset version's row in ``datasets``."""

    name: str
    version: int
    sql: str
    n_rows: int
    n_train: int
    n_eval: int
    eval_fraction: float
    seed: int
    content_hash: str
    columns: list[str]
    code_version: str | None
    run_id: str | None
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name@version``, the form the CLI accepts."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "DatasetInfo":
        fields = dict(row)
        fields["columns"] = json.loads(fields["columns"] or "[]")
        return cls(**fields)


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` -> (name, None) meaning the latest version; ``"name@3"`` -> (name, 3)."""
    name, sep, version = ref.partition("@")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InputError(f"bad dataset reference {ref!r}: expected NAME or NAME@VERSION (VERSION >= 1)")
    return name, int(version)


def _split_of(seed: int, row_key: str, eval_fraction: float) -> str:
    # A uniform number in [0, 1) from the row's key: stable across versions and runs.
    u = int(content_key(str(seed), row_key)[:8], 16) / 2**32
    return "eval" if u < eval_fraction else "train"


def _frozen_items(table: pa.Table, eval_fraction: float, seed: int) -> list[dict[str, Any]]:
    """The SELECT's rows as dataset items: standard columns, extras as JSON, key, split."""
    names = table.column_names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(
            f"the dataset SELECT must return columns {', '.join(REQUIRED_COLUMNS)} "
            f"(missing: {', '.join(missing)}; got: {', '.join(names) or 'none'}); optional: "
            f"{', '.join(OPTIONAL_COLUMNS)}. Example: SELECT sample_id, instruction, input, response FROM sample_view"
        )
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    items = []
    empty = 0
    for row in table.to_pylist():
        instruction, response = row["instruction"], row["response"]
        if not isinstance(instruction, str) or not instruction.strip() or not isinstance(response, str) or not response.strip():
            empty += 1
            continue
        item = {
            "instruction": instruction,
            "input": row.get("input") or "",
            "response": response,
            **{c: (None if row.get(c) is None else str(row[c])) for c in ("rationale", "label", "system_prompt", "sample_id")},
        }
        extra = {k: v for k, v in row.items() if k not in known}
        item["extra"] = canonical_json(extra) if extra else None
        item["row_key"] = item["sample_id"] or content_key(
            normalize_text(instruction), normalize_text(item["input"]), normalize_text(response)
        )
        items.append(item)
    if empty:
        raise InputError(
            f"{empty} row(s) of the dataset SELECT have an empty instruction or response; "
            "filter them out in the SQL (e.g. WHERE trim(response) <> '')"
        )
    # The SELECT's row order is arbitrary (DuckDB scans in parallel): sort by content so
    # the same rows always make the same version, hash and split.
    items.sort(key=lambda it: (it["row_key"], canonical_json(it)))
    for idx, item in enumerate(items):
        item["idx"] = idx
        item["split"] = _split_of(seed, item["row_key"], eval_fraction)
    if eval_fraction > 0 and len(items) >= 2 and not any(it["split"] == "eval" for it in items):
        # Tiny datasets can miss the eval split entirely; give it the row closest to it.
        closest = min(items, key=lambda it: content_key(str(seed), it["row_key"]))
        closest["split"] = "eval"
    return items


def _content_hash(items: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(canonical_json({k: v for k, v in item.items() if k != "idx"}).encode())
        h.update(b"\n")
    return h.hexdigest()


def create_dataset(
    store: Store,
    name: str,
    sql: str,
    eval_fraction: float = 0.1,
    seed: int = 0,
    run_id: str | None = None,
    reuse_unchanged: bool = False,
) -> DatasetInfo:
    """Freeze the rows ``sql`` returns into a new version of dataset ``name``.

    The SELECT must return ``instruction`` and ``response`` and may return ``input``,
    ``rationale``, ``label``, ``system_prompt``, ``sample_id`` (other columns are kept as
    JSON in ``dataset_items.extra``). Runs in one transaction, so the version number and
    the rows are consistent even with other writers around. ``reuse_unchanged``: when the
    rows (and their split) equal the latest version's, return that version instead of
    freezing an identical one.
    """
    if not _NAME.match(name):
        raise InputError(f"bad dataset name {name!r}: use letters, digits, '_', '-', '.' (no '@')")
    if not 0 <= eval_fraction < 1:
        raise InputError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise InputError("the dataset SQL must be a single SELECT statement")

    with store.write() as con:
        try:
            selected = con.sql(sql).to_arrow_table()
        except duckdb.Error as err:
            raise InputError(f"dataset SQL failed: {str(err).splitlines()[0]}") from err
        items = _frozen_items(selected, eval_fraction, seed)
        content_hash = _content_hash(items)
        if reuse_unchanged:
            latest = con.execute(LATEST_DATASET_SQL, [name]).fetchall()
            if latest:
                columns = [d[0] for d in con.description]
                info = DatasetInfo.from_row(dict(zip(columns, latest[0])))
                if info.content_hash == content_hash:
                    return info
        version = scalar(con, NEXT_VERSION_SQL, [name])
        n_eval = sum(1 for it in items if it["split"] == "eval")
        info = DatasetInfo(
            name=name,
            version=version,
            sql=sql,
            n_rows=len(items),
            n_train=len(items) - n_eval,
            n_eval=n_eval,
            eval_fraction=eval_fraction,
            seed=seed,
            content_hash=content_hash,
            columns=list(selected.column_names),
            code_version=code_version(),
            run_id=run_id,
            created_at=utcnow(),
        )
        con.execute(
            INSERT_DATASET_SQL,
            [info.name, info.version, info.sql, info.n_rows, info.n_train, info.n_eval, info.eval_fraction,
             info.seed, info.content_hash, json.dumps(info.columns), info.code_version, info.run_id, info.created_at],
        )
        if items:
            rows = pa.Table.from_pylist([{**it, "dataset_name": name, "version": version} for it in items])
            con.register("_dataset_items", rows)
            con.execute(INSERT_ITEMS_SQL)
            con.unregister("_dataset_items")
    return info


def list_datasets(store: Store) -> list[DatasetInfo]:
    """Every version of every dataset, by name then version."""
    return [DatasetInfo.from_row(r) for r in store.query(LIST_DATASETS_SQL)]


def get_dataset(store: Store, name: str, version: int | None = None) -> DatasetInfo:
    """A dataset version (the latest when ``version`` is None); NotFoundError if none."""
    if version is None:
        rows = store.query(LATEST_DATASET_SQL, [name])
    else:
        rows = store.query(DATASET_SQL, [name, version])
    if rows:
        return DatasetInfo.from_row(rows[0])
    versions = [r["version"] for r in store.query(DATASET_VERSIONS_SQL, [name])]
    if versions:
        raise NotFoundError(f"dataset {name!r} has no version {version} (versions: {', '.join(map(str, versions))})")
    known = sorted({d.name for d in list_datasets(store)})
    hint = f"known: {', '.join(known)}" if known else "no datasets yet: create one with `distill datasets create`"
    raise NotFoundError(f"dataset {name!r} does not exist ({hint})")


def load_rows(
    store: Store, name: str, version: int | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """The frozen rows of a version (latest by default), in order, optionally one split.

    Each row has the keys of ``ROW_COLUMNS``: instruction, input, response, rationale,
    label, system_prompt, sample_id, split.
    """
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r} (use one of: {', '.join(SPLITS)})")
    info = get_dataset(store, name, version)
    return store.query(ITEMS_SQL, [info.name, info.version, split, split])


# --- exports --------------------------------------------------------------------------


def answer_text(row: dict[str, Any]) -> str:
    """What a chat or prompt/completion export answers: the response; a row with a rationale
    reasons first, ``"<rationale> So the answer is <response>."`` (``core.text.render_answer``,
    the shape of the few-shot examples the teacher reasoned after)."""
    if (row.get("rationale") or "").strip():
        return render_answer(row["rationale"], row["response"])
    return row["response"]


def system_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The system turn, when the row has a system prompt (else none)."""
    return [{"role": "system", "content": row["system_prompt"]}] if row.get("system_prompt") else []


def chat_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """A row as chat ``messages`` (system if any, user, assistant): TRL's conversational format."""
    messages = system_messages(row)
    messages.append({"role": "user", "content": format_prompt(row["instruction"], row.get("input"))})
    messages.append({"role": "assistant", "content": answer_text(row)})
    return messages


# Distilling step-by-step (Hsieh et al. 2023) learns the label and the rationale as two
# tasks of one model, told apart by a prefix of the input. The export and the trainer
# both build them with ``step_by_step_examples``, so the exported file is what the
# student trains on.
STEP_BY_STEP_PREFIXES = {"predict": "predict: ", "explain": "explain: "}
"""Task name -> the prefix of its input (the reference code's ``predict: `` / ``explain: ``)."""


def step_by_step_examples(row: dict[str, Any]) -> list[dict[str, str]]:
    """Distilling step-by-step's multi-task examples of a row, predict first:

        {"task": "predict", "input": "predict: <prompt>", "output": <label, else the response>}
        {"task": "explain", "input": "explain: <prompt>", "output": <rationale>}   (rows with one)

    ``<prompt>`` is the user turn (``core.text.format_prompt``); outputs are stripped (a
    predict output may come out empty; the trainer refuses such a row). The trainer puts
    ``input`` in the user turn, after the row's system prompt when it has one.
    """
    prompt = format_prompt(row.get("instruction"), row.get("input"))
    label = (row.get("label") or row.get("response") or "").strip()
    rationale = (row.get("rationale") or "").strip()
    examples = [{"task": "predict", "input": STEP_BY_STEP_PREFIXES["predict"] + prompt, "output": label}]
    if rationale:
        examples.append({"task": "explain", "input": STEP_BY_STEP_PREFIXES["explain"] + prompt, "output": rationale})
    return examples


def _records(row: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """The lines (or Parquet rows) one dataset row becomes in ``fmt``."""
    if fmt == "jsonl-chat":
        return [{"messages": chat_messages(row)}]
    if fmt == "jsonl-prompt":
        return [{"prompt": format_prompt(row["instruction"], row["input"]), "completion": answer_text(row)}]
    if fmt == "jsonl-step-by-step":
        return step_by_step_examples(row)
    return [dict(row)]


def export_dataset(
    store: Store, name: str, version: int | None, fmt: ExportFormat | str, path: str | Path
) -> Path:
    """Write a dataset version to ``path`` and return it.

    Formats:
      * ``parquet``: every column of ``load_rows``.
      * ``jsonl-chat``: one ``{"messages": [...]}`` per line (``chat_messages``; a
        rationale row answers "<rationale> So the answer is <response>.", ``answer_text``).
      * ``jsonl-prompt``: one ``{"prompt": ..., "completion": ...}`` per line, the
        completion as the chat answer (Fine-tune-CoT's shape for rationale rows).
      * ``jsonl-step-by-step``: distilling step-by-step's multi-task examples
        (``step_by_step_examples``), ``{"task": "predict", "input": "predict: ...",
        "output": label}`` per row, then ``{"task": "explain", "input": "explain: ...",
        "output": rationale}`` when the row has a rationale.
      * ``hf``: a ``datasets.DatasetDict`` (train, eval) saved with ``save_to_disk``;
        rows carry the ``load_rows`` columns plus ``messages`` (as in ``jsonl-chat``).

    For parquet and JSONL, a ``path`` ending in ``.parquet``/``.jsonl`` is one file with
    a ``split`` column; any other path is a directory holding ``train.*`` and ``eval.*``.
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r} (use one of: {', '.join(EXPORT_FORMATS)})")
    info = get_dataset(store, name, version)
    rows = load_rows(store, info.name, info.version)
    path = Path(path)
    by_split = {s: [r for r in rows if r["split"] == s] for s in SPLITS}

    if fmt == "hf":
        import datasets as hf  # heavy import, only when asked for

        # Explicit features: an empty split (or an all-None column) still gets the types.
        features = hf.Features(
            {
                **{c: hf.Value("string") for c in ROW_COLUMNS},
                "messages": [{"role": hf.Value("string"), "content": hf.Value("string")}],
            }
        )
        hf.DatasetDict(
            {
                s: hf.Dataset.from_dict(
                    {
                        **{c: [r[c] for r in part] for c in ROW_COLUMNS},
                        "messages": [chat_messages(r) for r in part],
                    },
                    features=features,
                )
                for s, part in by_split.items()
            }
        ).save_to_disk(
            str(path),
            # datasets writes an empty split as zero shards, which load_from_disk then
            # cannot read back; one shard per split avoids that.
            num_shards={s: 1 for s in SPLITS} if not all(by_split.values()) else None,
        )
        return path

    suffix = ".parquet" if fmt == "parquet" else ".jsonl"
    if path.suffix in (".parquet", ".jsonl", ".json"):
        # One file: each JSONL line says its split (Parquet rows carry the column already).
        files = {path: [record | ({"split": r["split"]} if fmt != "parquet" else {})
                        for r in rows for record in _records(r, fmt)]}
    else:
        files = {path / f"{s}{suffix}": [record for r in part for record in _records(r, fmt)]
                 for s, part in by_split.items()}
    for file, records in files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            schema = pa.schema([(c, pa.string()) for c in ROW_COLUMNS])
            pq.write_table(pa.Table.from_pylist(records, schema=schema), file)
        else:
            with open(file, "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
