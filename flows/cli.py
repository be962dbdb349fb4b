"""The `distill` command.

    distill db init                                   # create/migrate ./distillery.duckdb
    distill seeds ingest                              # the shipped seed tasks
    distill sql "SELECT method, count(*) FROM instructions GROUP BY 1"
    distill datasets create seeds --sql "SELECT sample_id, instruction, input, response FROM sample_view"
    distill datasets export seeds@1 --format jsonl-chat --to out/
    distill --db other.duckdb db stats                # or DISTILL_DB=other.duckdb

Other folders add their own commands: write a module with a ``typer.Typer()`` named
``app`` and add one line to ``SUBCOMMANDS`` at the bottom. Keep heavy imports (torch,
prefect, transformers) inside the command functions, so `distill sql` stays fast.

Errors the user can fix print one line, ``error: ...``, on stderr and exit with 2;
``DISTILL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import csv
import enum
import importlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from core.errors import DistillError, InputError
from storage.store import TABLES, Store, default_db_path

app = typer.Typer(
    name="distill",
    help="Distill LLMs: teacher generation, curated datasets in DuckDB, trained students.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() turns errors into one line
)
db_app = typer.Typer(help="Create, migrate and inspect the database.", no_args_is_help=True)
datasets_app = typer.Typer(help="Versioned datasets: create, list, show, export.", no_args_is_help=True)
seeds_app = typer.Typer(help="Seed tasks (self-instruct JSONL).", no_args_is_help=True)

console = Console(soft_wrap=True)  # messages stay one line; tables still fit the width

# Statement types `distill sql` runs. Everything else (INSERT, COPY ... TO, ATTACH,
# CREATE, SET ...) is refused before it reaches the (read-only) connection.
READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}


class OutputFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


class ExportFormat(str, enum.Enum):
    parquet = "parquet"
    jsonl_chat = "jsonl-chat"
    jsonl_prompt = "jsonl-prompt"
    jsonl_step_by_step = "jsonl-step-by-step"
    hf = "hf"


@app.callback()
def _global_options(
    db: Optional[Path] = typer.Option(
        None, "--db", envvar="DISTILL_DB", help="Database file (default ./distillery.duckdb).", show_default=False
    ),
) -> None:
    # Publish the choice through the environment: every Store(default_db_path()) in this
    # process, in sub-commands and in the flows they start, then agrees on the file.
    if db is not None:
        os.environ["DISTILL_DB"] = str(db)


def _store() -> Store:
    return Store(default_db_path())


def _rich_table(rows: list[dict[str, Any]], title: str | None = None, caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for name in rows[0] if rows else ():
        table.add_column(str(name), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


# --- distill db -----------------------------------------------------------------------


@db_app.command("init")
def db_init() -> None:
    """Create the database (if needed) at the latest schema version."""
    store = _store()
    version = store.init()
    console.print(f"database {store.path} ready (schema version {version})")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations to an existing database."""
    store = _store()
    before = store.schema_version()
    after = store.migrate()
    verb = "migrated" if after != before else "already at"
    console.print(f"database {store.path} {verb} schema version {after}" + (f" (from {before})" if after != before else ""))


@db_app.command("stats")
def db_stats() -> None:
    """Row counts per table, schema version, file size, and journal backlog."""
    store = _store()
    counts = store.table_counts()
    rows = [{"table": t, "rows": f"{counts[t]:,}"} for t in TABLES]
    size = store.path.stat().st_size / 2**20
    console.print(_rich_table(rows, title=f"{store.path} (schema {store.schema_version()}, {size:.1f} MiB)"))
    segments = store.journal_segments()
    if segments:
        console.print(f"journal: {store.journal_rows():,} rows in {len(segments)} segments waiting to be merged")


# --- distill sql ----------------------------------------------------------------------


def check_read_only(sql: str) -> None:
    """Refuse anything but one read-only statement, with a message saying why."""
    statements = duckdb.extract_statements(sql)  # a syntax error raises ParserException
    if not statements:
        raise InputError("no SQL statement given")
    if len(statements) > 1:
        raise InputError("`distill sql` runs one statement at a time")
    kind = statements[0].type
    if kind not in READ_ONLY_STATEMENTS:
        raise InputError(
            f"`distill sql` is read-only: {kind.name} statements are refused "
            "(use SELECT; change data through distill commands)"
        )


@app.command("sql")
def sql_command(
    query: str = typer.Argument(..., help="One read-only SQL statement (SELECT, EXPLAIN, PRAGMA)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    max_rows: int = typer.Option(200, help="Most rows the table format prints (the others are complete)."),
) -> None:
    """Run a read-only SQL query against the database (safe while flows write to it)."""
    check_read_only(query)
    if fmt is OutputFormat.parquet and output is None:
        raise InputError("--format parquet needs --output FILE")
    result = _store().query_arrow(query)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)

    if fmt is OutputFormat.parquet:
        import pyarrow.parquet as pq

        pq.write_table(result, output)
    elif fmt is OutputFormat.table:
        rows = result.slice(0, max_rows).to_pylist()
        caption = f"{len(rows)} of {result.num_rows} rows (use --format csv for all)" if result.num_rows > len(rows) else f"{result.num_rows} row{'' if result.num_rows == 1 else 's'}"
        table = _rich_table(rows, caption=caption) if result.num_columns else "(no columns)"
        if output is None:
            console.print(table)
        else:
            with open(output, "w", encoding="utf-8") as f:
                Console(file=f, width=200).print(table)
    else:
        text = _to_csv(result) if fmt is OutputFormat.csv else json.dumps(result.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
    if output is not None:
        console.print(f"wrote {result.num_rows} rows to {output}", highlight=False)


def _to_csv(table: Any) -> str:
    # The csv module rather than pyarrow.csv: it writes nested values (lists, structs).
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for v in row.values()])
    return buf.getvalue()


# --- distill datasets -----------------------------------------------------------------


@datasets_app.command("list")
def datasets_list() -> None:
    """Every dataset version."""
    from storage.datasets import list_datasets

    infos = list_datasets(_store())
    if not infos:
        console.print("no datasets yet: create one with `distill datasets create NAME --sql \"SELECT ...\"`")
        return
    rows = [
        {"dataset": i.ref, "rows": i.n_rows, "train": i.n_train, "eval": i.n_eval,
         "created": f"{i.created_at:%Y-%m-%d %H:%M}", "hash": i.content_hash[:12]}
        for i in infos
    ]
    console.print(_rich_table(rows))


@datasets_app.command("show")
def datasets_show(
    ref: str = typer.Argument(..., help="NAME or NAME@VERSION (default: the latest version)."),
    rows: int = typer.Option(3, help="How many rows to preview."),
) -> None:
    """A dataset version: counts, split, hash, the SQL that made it, a few rows."""
    from storage.datasets import get_dataset, load_rows, parse_dataset_ref

    store = _store()
    info = get_dataset(store, *parse_dataset_ref(ref))
    console.print(f"[bold]{info.ref}[/bold]  {info.n_rows} rows ({info.n_train} train, {info.n_eval} eval)")
    console.print(f"eval fraction {info.eval_fraction}, seed {info.seed}, content hash {info.content_hash}")
    console.print(f"created {info.created_at:%Y-%m-%d %H:%M:%S} UTC by {info.code_version}" + (f", run {info.run_id}" if info.run_id else ""))
    console.print(f"sql: {info.sql}", highlight=False, markup=False)
    preview = [
        {k: _clip(r[k]) for k in ("instruction", "input", "response", "split")}
        for r in load_rows(store, info.name, info.version)[:rows]
    ]
    if preview:
        console.print(_rich_table(preview))


def _clip(text: str | None, limit: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@datasets_app.command("create")
def datasets_create(
    name: str = typer.Argument(..., help="Dataset name; each create makes the next version."),
    sql: str = typer.Option(..., "--sql", help="SELECT returning instruction, response [, input, rationale, label, system_prompt, sample_id]."),
    eval_fraction: float = typer.Option(0.1, help="Share of rows in the eval split."),
    seed: int = typer.Option(0, help="Seed of the train/eval split."),
) -> None:
    """Freeze the rows a SELECT returns into a new immutable dataset version."""
    from storage.datasets import create_dataset

    info = create_dataset(_store(), name, sql, eval_fraction=eval_fraction, seed=seed)
    console.print(f"created {info.ref}: {info.n_rows} rows ({info.n_train} train, {info.n_eval} eval), hash {info.content_hash[:12]}")


@datasets_app.command("export")
def datasets_export(
    ref: str = typer.Argument(..., help="NAME or NAME@VERSION (default: the latest version)."),
    fmt: ExportFormat = typer.Option(
        ..., "--format", "-f",
        help="parquet (every column), jsonl-chat ({messages}), jsonl-prompt ({prompt, completion}) (in both, a "
        "rationale row answers '<rationale> So the answer is <answer>.'), jsonl-step-by-step (distilling "
        "step-by-step's tasks: {task, input: 'predict: ...' or 'explain: ...', output}), hf (datasets.save_to_disk).",
    ),
    to: Path = typer.Option(..., "--to", help="File (.parquet/.jsonl: one file with a split column) or folder."),
) -> None:
    """Export a dataset version to Parquet, JSONL (chat, prompt/completion or step-by-step tasks) or HF datasets."""
    from storage.datasets import export_dataset, parse_dataset_ref

    name, version = parse_dataset_ref(ref)
    path = export_dataset(_store(), name, version, fmt.value, to)
    console.print(f"exported {ref} as {fmt.value} to {path}", highlight=False)


# --- distill seeds --------------------------------------------------------------------


@seeds_app.command("ingest")
def seeds_ingest(
    file: Optional[Path] = typer.Argument(None, help="Seed JSONL (default: the seed tasks shipped with distillery)."),
) -> None:
    """Ingest self-instruct seed tasks: each task, its instances and their outputs."""
    from storage.records import Run, utcnow
    from storage.seeds import DEFAULT_SEED_FILE, parse_seed_file
    from storage.store import code_version

    path = file or DEFAULT_SEED_FILE
    run = Run(flow="seeds", status="completed", config={"file": str(path)}, code_version=code_version())
    instructions, samples = parse_seed_file(path, run_id=run.id)
    store = _store()
    result = store.ingest([*instructions, *samples])
    run = run.model_copy(update={"ended_at": utcnow(), "counts": {"new": result.new, "duplicate": result.duplicate}})
    store.ingest([run])
    console.print(f"{path}: {result}", highlight=False)


# --- sub-commands ---------------------------------------------------------------------

app.add_typer(db_app, name="db")
app.add_typer(datasets_app, name="datasets")
app.add_typer(seeds_app, name="seeds")

# Commands owned by other folders: (module defining a typer `app`, command group name).
# A name of None merges the module's commands at the top level (`distill run`, ...).
SUBCOMMANDS: list[tuple[str, str | None]] = [
    ("flows.cli_teacher", "teacher"),
    ("flows.cli_flows", None),  # distill run / generate / curate / train (the Prefect flows)
    ("flows.cli_server", "server"),  # distill server start / stop / status
    ("flows.cli_lion", None),  # distill lion (Lion's adversarial loop)
]


def _register_subcommands() -> None:
    for module_name, name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # listed before its module landed: the other commands still work
        app.add_typer(module.app, name=name)
        if hasattr(module, "ops"):  # top-level commands a module adds beside its group
            app.add_typer(module.ops)


_register_subcommands()


# --- entry point ----------------------------------------------------------------------


def _duckdb_message(err: duckdb.Error) -> str:
    # DuckDB messages are multi-line (candidate bindings, a caret under the query);
    # the first line names the problem: 'Catalog Error: Table with name x does not exist!'
    return str(err).strip().splitlines()[0]


try:  # typer vendors its own click; its exceptions are the ones raised
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # older typer on plain click
    from click.exceptions import UsageError as _UsageError


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning errors into one line + exit 2."""
    if os.environ.get("DISTILL_DEBUG"):
        app(args=argv, prog_name="distill")
        return
    try:
        # standalone_mode=False: usage errors reach us as exceptions (one line below)
        # instead of click's boxed message; exit codes come back as the return value.
        code = app(args=argv, prog_name="distill", standalone_mode=False)
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except _UsageError as err:
        if not err.format_message():  # no arguments at all: the help was shown
            raise SystemExit(err.exit_code)
        hint = f" (see: {err.ctx.command_path} --help)" if err.ctx is not None else ""
        _die(f"{err.format_message()}{hint}")
    except typer.Abort:
        _die("aborted", 1)
    except DistillError as err:
        _die(str(err), err.exit_code)
    except duckdb.Error as err:
        _die(_duckdb_message(err))
    except FileNotFoundError as err:
        _die(f"file not found: {err.filename or err}")
    except OSError as err:
        _die(f"{err.strerror or err}: {err.filename}" if err.filename else str(err))
    except KeyboardInterrupt:
        _die("interrupted", 130)
    except Exception as err:  # a bug, not bad input: still one line, with a way to see more
        _die(f"internal error ({type(err).__name__}: {err}); set DISTILL_DEBUG=1 for the traceback", 1)


def _die(message: str, code: int = 2) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
