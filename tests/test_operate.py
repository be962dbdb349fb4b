"""Operating distillery continuously (issue #16), against real servers and real processes.

One session fixture (``operated``) runs what a user runs: ``distill server start`` in a
temporary state folder, ``distill worker --detach`` against it; at the end ``distill
server stop``, and then no process it started may be left. The tests:

- ``kill -9`` of a command in ephemeral mode leaves nothing behind;
- a CLI run's INFO logs reach the server while the terminal stays quiet;
- two scheduled runs of the ``generate`` deployment each add new data;
- curate's ``distill.dataset.ready`` event makes the worker retrain (rows in DuckDB);
- the ``pipeline`` deployment runs to Completed on the worker;
- ``distill serve`` with no server running starts the project's and serves a deployment;
- the UI renders the runs and a run's report in headless Chromium.

Every child gets an environment without the test process's Prefect settings (the
harness's PREFECT_LOGGING_LEVEL=WARNING would keep INFO logs from the server) and with
a marker variable, so whatever a child started can be found by its environment.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from storage.records import Instruction, Sample
from storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MARKER = "DISTILL_TEST_OPERATE"  # in every child's environment: what the tests started carries it
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# -- helpers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(marker: str, **extra: str) -> dict[str, str]:
    """os.environ without this test process's Prefect and distill-server settings (the
    harness's PREFECT_HOME, PREFECT_LOGGING_LEVEL=WARNING, conftest's DISTILL_SERVER),
    with this checkout first on the path and ``marker`` to find the child's processes by."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in ("DISTILL_SERVER", "DISTILL_DB", "DISTILL_HOME")}
    env.update(PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PYTHONUNBUFFERED="1", **{MARKER: marker}, **extra)
    return env


def marked(marker: str) -> list[psutil.Process]:
    """Live processes (zombies do not count) whose environment carries ``marker``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            chain = " <- ".join(str(a.pid) for a in p.parents())
            lines.append(f"pid {p.pid} (parents {chain or '-'}): {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"pid {p.pid} (gone)")
    return "\n".join(lines)


def wait_none_left(marker: str, timeout: float = 30.0) -> list[psutil.Process]:
    """Wait until no live process carries ``marker``; what is left at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL processes this test started (found by its marker), so a failure leaks nothing."""
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def write_instructions(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in texts))
    return path


def teacher_sets(url: str) -> list[str]:
    return ["--set", "teacher.backend=openai", "--set", "teacher.model=fake-teacher",
            "--set", f"teacher.base_url={url}"]


@dataclass
class Operated:
    """The fixture's server and worker, and how to run `distill` against them."""

    api: str
    home: Path          # DISTILL_HOME: the server's state folder
    workdir: Path       # where the commands run (a folder outside the checkout)
    db: Path            # the project's database (DISTILL_DB)
    env: dict[str, str]
    marker: str
    server_pid: int
    worker_pid: int

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def distill(self, *args: str, timeout: float = 300, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=self.workdir, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"distill {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log\n" + (self.home / f"{name}.log").read_text()[-4000:]
                         for name in ("server", "worker") if (self.home / f"{name}.log").exists())

    @contextmanager
    def client(self) -> Iterator:
        """A sync Prefect client of this server (in this test process)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api}), get_client(sync_client=True) as client:
            yield client

    def run_deployment(self, name: str, parameters: dict, scheduled_time: datetime.datetime | None = None,
                       timeout: float = 240):
        """Create a run of deployment ``name`` and wait until it has run (on the worker, or in
        the process that serves the deployment)."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api}):
            run = run_deployment(name, parameters=parameters, scheduled_time=scheduled_time, timeout=timeout,
                                 poll_interval=1)
        assert run.state is not None and run.state.is_final(), f"{name}: not finished\n{self.logs()}"
        return run

    def flow_run_logs(self, flow_run_id) -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

        with self.client() as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]),
                                              level=LogFilterLevel(ge_=20)))
        return [log.message for log in logs]


@pytest.fixture(scope="session")
def operated(tmp_path_factory) -> Iterator[Operated]:
    """`distill server start --port <free>` in a temporary DISTILL_HOME and `distill worker
    --detach --query-seconds 2` against it; `distill server stop` at the end, after which
    no process the fixture (or a test through it) started may be running."""
    root = tmp_path_factory.mktemp("operate")
    marker = uuid.uuid4().hex
    workdir = root / "project"
    workdir.mkdir()
    env = child_env(marker, DISTILL_HOME=str(root / "state"), DISTILL_DB=str(root / "project.duckdb"),
                    PREFECT_HOME=str(root / "client-prefect-home"))
    op = Operated(api="", home=root / "state", workdir=workdir, db=root / "project.duckdb", env=env,
                  marker=marker, server_pid=0, worker_pid=0)
    try:
        out = op.distill("server", "start", "--port", str(_free_port()), timeout=240)
        server = json.loads((op.home / "server.json").read_text())
        op.api, op.server_pid = server["url"], server["pid"]
        assert f"UI: {op.ui}" in out.stdout
        op.distill("worker", "--detach", "--query-seconds", "2")
        op.worker_pid = json.loads((op.home / "worker.json").read_text())["pid"]
        yield op
    finally:
        stopped = op.distill("server", "stop", check=False, timeout=120)
        left = wait_none_left(marker, timeout=20)
        groups = {op.server_pid, op.worker_pid} - {0}
        in_groups = [p for p in psutil.process_iter() if _pgid(p) in groups]
        kill_all(left + in_groups)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not in_groups, f"`distill server stop` left its process groups:\n{_describe(in_groups)}"
        assert not left, f"`distill server stop` left processes behind:\n{_describe(left)}"
        assert not (op.home / "server.json").exists() and not (op.home / "worker.json").exists()


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid) if proc.status() != psutil.STATUS_ZOMBIE else None
    except (ProcessLookupError, psutil.Error):
        return None


# -- 1. ephemeral mode: kill -9 leaves nothing ----------------------------------------------


class SilentTeacher:
    """A teacher that hangs: it accepts connections and never answers (an endpoint that is
    up but stuck). ``connections`` counts the requests it holds."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_kill_9_in_ephemeral_mode_leaves_nothing_behind(tmp_path):
    from flows.server import template_db

    marker = uuid.uuid4().hex
    home = tmp_path / "prefect-home"
    home.mkdir()
    if template_db().exists():  # a migrated database: the temporary server starts sooner
        shutil.copyfile(template_db(), home / "prefect.db")
    env = child_env(marker, DISTILL_SERVER="ephemeral", PREFECT_HOME=str(home))
    instructions = write_instructions(tmp_path / "hang.jsonl", [f"Describe hanging thing {i}." for i in range(4)])
    teacher = SilentTeacher()
    before = {p.pid for p in psutil.process_iter()}
    log = open(tmp_path / "command.log", "w")
    command = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--db", str(tmp_path / "k.duckdb"), "generate", "--method", "responses",
         "--target", "4", "--batch-size", "4", "--instructions-file", str(instructions), "--run-name", "killed",
         *teacher_sets(teacher.url), "--set", "teacher.timeout_s=300", "--set", "teacher.max_retries=0"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: dict[int, psutil.Process] = {}
    api_server = None
    try:
        # Mid-run: its temporary API server up, its requests on the wire to the stuck teacher.
        deadline = time.monotonic() + 180
        while api_server is None or not teacher.held:
            assert command.poll() is None, (tmp_path / "command.log").read_text()
            assert time.monotonic() < deadline, "the command never got its API server up and the teacher busy"
            for child in psutil.Process(command.pid).children(recursive=True):
                seen[child.pid] = child
                if "server start" in " ".join(child.cmdline()) and "--no-services" in child.cmdline():
                    api_server = child  # the command's own temporary server (flows/server.py)
            time.sleep(0.2)
        for child in psutil.Process(command.pid).children(recursive=True):
            seen[child.pid] = child
        os.kill(command.pid, signal.SIGKILL)
        command.wait(timeout=10)
        left = wait_none_left(marker, timeout=20)
        # Also by pid and parent chain: no process that appeared since the start and
        # descended from the command (now re-parented to init) is still running.
        new = [p for p in psutil.process_iter() if p.pid not in before and _alive(p)]
        orphans = [p for p in new if p.pid in seen and _same(p, seen[p.pid])]
    finally:
        if command.poll() is None:
            command.kill()
        log.close()
        teacher.close()
        kill_all(marked(marker))
    assert api_server is not None and api_server.pid in seen
    assert not left, f"kill -9 left processes behind:\n{_describe(left)}"
    assert not orphans, f"kill -9 left the command's children behind:\n{_describe(orphans)}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _same(proc: psutil.Process, seen: psutil.Process) -> bool:
    """The process seen before (not a new one that got its pid)."""
    try:
        return proc.create_time() == seen.create_time()
    except psutil.Error:
        return False


# -- 2. a CLI run's logs reach the server ---------------------------------------------------


def test_a_cli_runs_info_logs_reach_the_server_and_not_the_terminal(operated, fake_openai, tmp_path):
    instructions = write_instructions(tmp_path / "logs.jsonl", [f"Name a colour, number {i}." for i in range(3)])
    out = operated.distill("generate", "--method", "responses", "--target", "3", "--batch-size", "3",
                           "--instructions-file", str(instructions), "--run-name", "logs-reach",
                           *teacher_sets(fake_openai.url))
    terminal = out.stdout + out.stderr
    assert "| INFO" not in terminal and "Beginning flow run" not in terminal, terminal
    assert "started a Prefect server" not in terminal  # it used the fixture's server

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with operated.client() as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["generate-logs-reach"])))
    assert run.state.is_completed()
    deadline = time.monotonic() + 30
    while True:
        messages = operated.flow_run_logs(run.id)
        if any(m.startswith("batch 1: 3 requests") for m in messages):
            break
        assert time.monotonic() < deadline, f"no INFO log of the run reached the server: {messages}"
        time.sleep(1)
    assert any(m.startswith("generate logs-reach: done: 3/3 samples kept") for m in messages), messages


# -- 3. scheduled runs grow the data --------------------------------------------------------


def test_two_scheduled_runs_of_the_generate_deployment_each_add_new_data(operated, fake_openai, tmp_path):
    target = 4
    texts = [f"Explain scheduled topic number {i} in a sentence." for i in range(2 * target)]
    instructions = write_instructions(tmp_path / "nightly.jsonl", texts)
    operated.distill("deploy", "generate")
    params = {"teacher": {"backend": "openai", "model": "fake-teacher", "base_url": fake_openai.url},
              "generate": {"method": "responses", "target": target, "batch_size": target,
                           "instructions_file": str(instructions), "params": {"method": "responses"}}}
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    times = [now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1)]  # two nights, due now
    runs = [operated.run_deployment("generate/generate", params, scheduled_time=t) for t in times]

    assert [r.state.type.value for r in runs] == ["COMPLETED", "COMPLETED"], operated.logs()
    names = [f"nightly-{t:%Y-%m-%dT%H-%M}" for t in times]
    assert [r.name for r in runs] == [f"generate-{n}" for n in names]
    store = Store(operated.db)
    rows = {r["name"]: r for r in store.query(
        "SELECT name, id, status, prefect_flow_run_id FROM runs WHERE flow = 'generate' AND name IN (?, ?)", names)}
    assert [rows[n]["status"] for n in names] == ["completed", "completed"]
    assert [rows[n]["prefect_flow_run_id"] for n in names] == [str(r.id) for r in runs]
    kept = [store.query("SELECT sample_id, instruction_id FROM kept_samples WHERE run_id = ?", [rows[n]["id"]])
            for n in names]
    assert [len(k) for k in kept] == [target, target]  # the second run added its target of NEW samples
    first, second = ({r["sample_id"] for r in k} for k in kept)
    assert not first & second
    assert not {r["instruction_id"] for r in kept[0]} & {r["instruction_id"] for r in kept[1]}
    assert sorted(fake_openai.counts.values()) == [1] * (2 * target)  # every instruction asked once


# -- 4. the dataset.ready event retrains ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    from training.testing import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny") / "student", num_layers=2, hidden_size=32)


def tiny_train(student: Path, out: Path) -> dict:
    return {"method": "sft", "student": str(student), "teacher": None, "max_steps": 2, "batch_size": 2,
            "max_length": 64, "output_dir": str(out),
            "eval": {"max_prompts": 2, "max_new_tokens": 4, "agreement": False}}


def test_curate_event_retrains_on_the_worker(operated, tiny_student, tmp_path):
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    db = owls_db(tmp_path / "retrain.duckdb")

    operated.distill("deploy", "curate", "retrain-on-new-data")
    with operated.client() as client:
        retrain = client.read_deployment_by_name("train/retrain-on-new-data")
        client.update_deployment(retrain.id, DeploymentUpdate(parameters={
            **retrain.parameters, "train": tiny_train(tiny_student, tmp_path / "ckpt"), "evaluate": {"before": True}}))
    curate = {"dataset": "owls", "export_dir": str(tmp_path / "exports"), "min_new_rows_for_event": 1,
              "eval_fraction": 0.34}
    first = operated.run_deployment("curate/curate", {"db": str(db), "run_name": "owls-1", "curate": curate})
    assert first.state.is_completed(), operated.logs()

    deadline = time.monotonic() + 240
    while True:
        with operated.client() as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id])))
        if runs and runs[0].state.is_final():
            break
        assert time.monotonic() < deadline, f"the event did not retrain: {runs}\n{operated.logs()}"
        time.sleep(2)
    (train_run,) = runs
    assert train_run.state.is_completed(), f"{train_run.state}\n{operated.logs()}"
    assert train_run.parameters["dataset"] == "owls" and int(train_run.parameters["dataset_version"]) == 1
    assert train_run.parameters["db"] == str(db)

    store = Store(db)
    (trained,) = store.query("SELECT id, run_id, status, method FROM training_runs "
                             "WHERE dataset_name = 'owls' AND dataset_version = 1")
    assert trained["run_id"] == str(train_run.id)  # the Prefect flow run that trained
    assert trained["status"] == "completed" and trained["method"] == "sft"
    evaluations = store.query("SELECT DISTINCT model_label FROM evaluations WHERE dataset_name = 'owls' "
                              "AND dataset_version = 1 ORDER BY 1")
    assert [e["model_label"] for e in evaluations] == ["sft (after)", "student (before)"]
    (after,) = store.query("SELECT DISTINCT training_run_id FROM evaluations WHERE model_label = 'sft (after)'")
    assert after["training_run_id"] == trained["id"]

    # A curate run with no new rows (its version holds nothing the last did not) emits nothing.
    out = operated.distill("--db", str(db), "curate", "--dataset", "owls", "--run-name", "owls-2",
                           "--set", "curate.min_new_rows_for_event=1",
                           "--set", f"curate.export_dir={tmp_path / 'exports'}")
    (second,) = store.query("SELECT counts FROM runs WHERE flow = 'curate' AND name = 'owls-2'")
    counts = json.loads(second["counts"])
    assert counts["version"] == 2 and counts["new_rows"] == 0 and counts["event"] is None, out.stdout
    time.sleep(3)  # an event the command sent is persisted by now
    with operated.client() as client:
        events = client.read_events(EventFilter(event=EventNameFilter(name=["distill.dataset.ready"]),
                                                resource=EventResourceFilter(id=["distill.dataset.owls"])),
                                    limit=50).events  # the server's most (the client's default, 100, is refused)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id])))
    assert [e.payload["version"] for e in events] == [1]
    assert events[0].payload["db"] == str(db)
    assert len(runs) == 1


# -- 5. the done-when path: deploy, worker, pipeline ----------------------------------------


def test_pipeline_deployment_runs_to_completed_on_the_worker(operated, fake_openai, tiny_student, tmp_path):
    operated.distill("deploy")
    instructions = write_instructions(tmp_path / "pipeline.jsonl",
                                      [f"Say something useful about number {i}." for i in range(12)])
    db = tmp_path / "pipeline.duckdb"
    config = {
        "run_name": "weekly-{scheduled}",
        "db": str(db),
        "teacher": {"backend": "openai", "model": "fake-teacher", "base_url": fake_openai.url},
        "skip": {"seeds": True},
        "generate": {"method": "responses", "target": 8, "batch_size": 4, "instructions_file": str(instructions)},
        # No event: this test is about the pipeline, not another retraining run on the worker.
        "curate": {"dataset": "weekly", "only_this_run": True, "eval_fraction": 0.25, "export_formats": [],
                   "emit_event": False},
        "train": tiny_train(tiny_student, tmp_path / "ckpt"),
        "evaluate": {"before": False},
    }
    run = operated.run_deployment("pipeline/pipeline", {"config": config}, timeout=300)
    assert run.state.is_completed(), f"{run.state}\n{operated.logs()}"
    assert run.name.startswith("pipeline-weekly-") and "{" not in run.name

    store = Store(db)
    steps = {r["flow"]: r["status"] for r in store.query("SELECT flow, status FROM runs")}
    assert steps == {"pipeline": "completed", "generate": "completed", "curate": "completed", "train": "completed"}
    (trained,) = store.query("SELECT dataset_name, dataset_version, status FROM training_runs")
    assert trained == {"dataset_name": "weekly", "dataset_version": 1, "status": "completed"}


# -- 5b. distill serve, no worker ------------------------------------------------------------


def owls_db(path: Path) -> Path:
    """A database holding six answered instructions: a small dataset to curate."""
    records = []
    for i in range(6):
        ins = Instruction(text=f"Tell me fact number {i} about owls.", method="seed")
        records += [ins, Sample(instruction_id=ins.id, response=f"Owls fact {i}: they hunt at night and see well "
                                f"in the dark, number {i}.", method="responses", teacher_model="t")]
    Store(path).ingest(records)
    return path


def test_serve_starts_the_projects_server_and_runs_what_it_serves(tmp_path):
    """`distill serve` where no server runs: it starts the project's server in the
    background, waits for it, serves the deployment (runs execute in the serving process,
    no worker); `distill server stop` then leaves nothing."""
    import urllib.request

    marker = uuid.uuid4().hex
    env = child_env(marker, DISTILL_HOME=str(tmp_path / "state"), DISTILL_DB=str(tmp_path / "served.duckdb"),
                    PREFECT_HOME=str(tmp_path / "client-prefect-home"))
    db = owls_db(tmp_path / "served.duckdb")
    log = open(tmp_path / "serve.log", "w")
    serving = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "curate"], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:  # the server it started answers, and lists the served deployment
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                api = json.loads((tmp_path / "state" / "server.json").read_text())["url"]
                with urllib.request.urlopen(f"{api}/deployments/name/curate/curate", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        op = Operated(api=api, home=tmp_path / "state", workdir=tmp_path, db=db, env=env, marker=marker,
                      server_pid=0, worker_pid=0)
        run = op.run_deployment("curate/curate", {"db": str(db), "run_name": "served",
                                                  "curate": {"dataset": "served", "export_formats": [],
                                                             "emit_event": False}})
        assert run.state.is_completed(), (tmp_path / "serve.log").read_text()
        assert Store(db).query("SELECT name, version FROM datasets") == [{"name": "served", "version": 1}]
    finally:
        serving.send_signal(signal.SIGINT)
        try:
            serving.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serving.kill()
        log.close()
        stopped = subprocess.run([sys.executable, "-m", "flows.cli", "server", "stop"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)
        left = wait_none_left(marker, timeout=20)
        kill_all(left)
    assert "stopped server" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not left, f"serve and `distill server stop` left processes behind:\n{_describe(left)}"


# -- 6. the UI in a real browser -------------------------------------------------------------


def render(url: str, profile: Path, *, height: int = 4000) -> str:
    """The DOM headless Chromium renders for ``url``: a tall window (the runs list draws only
    the rows in view) and 40 s of virtual page time (at 20 s its rows were sometimes missing)."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=40000",
         f"--window-size=1400,{height}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): no browser "
                    "to render the UI with")
def test_the_ui_renders_the_runs_and_a_runs_report(operated, fake_openai, tmp_path):
    instructions = write_instructions(tmp_path / "ui.jsonl", [f"Describe a shape, number {i}." for i in range(3)])
    operated.distill("generate", "--method", "responses", "--target", "3", "--batch-size", "3",
                     "--instructions-file", str(instructions), "--run-name", "ui-check", *teacher_sets(fake_openai.url))
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with operated.client() as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["generate-ui-check"])))
        (report,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type=ArtifactFilterType(any_=["markdown"])))
    title = "Generation report: ui-check"

    runs_page = render(f"{operated.ui}/runs", tmp_path / "profile-1")
    assert run.name in runs_page
    run_page = render(f"{operated.ui}/runs/flow-run/{run.id}", tmp_path / "profile-2")
    assert run.name in run_page and "Artifacts" in run_page
    # The report renders on the artifact's own page (the run page opens on its Logs tab).
    report_page = render(f"{operated.ui}/artifacts/artifact/{report.id}", tmp_path / "profile-3")
    assert title in report_page and run.name in report_page
