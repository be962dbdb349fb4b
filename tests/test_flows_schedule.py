"""Against a real `prefect server start`: a served deployment runs, and the dataset.ready
event it emits triggers the retraining deployment with the version from the payload."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from storage.records import Instruction, Sample
from storage.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# Register the retraining deployment (and its trigger) without serving it: the run the
# trigger creates stays scheduled, which is all this test needs to see (training is
# tested elsewhere). Serve the curate deployment, then run it through the API.
APPLY = "from flows.deployments import load_deployments; load_deployments(names=['retrain-on-new-data'])[0].apply()"
SERVE = "from flows.deployments import load_deployments, serve_deployments; " \
        "serve_deployments(load_deployments(names=['curate']))"
RUN = textwrap.dedent("""
    import json, sys, time
    from prefect.deployments import run_deployment
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    db, exports = sys.argv[1:3]
    deadline = time.monotonic() + 180
    with get_client(sync_client=True) as client:  # the serving process registers it when it starts
        while True:
            try:
                client.read_deployment_by_name("curate/curate")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    run = run_deployment("curate/curate", timeout=240, parameters={
        "db": db, "run_name": "scheduled",
        "curate": {"dataset": "sched", "export_dir": exports, "min_new_rows_for_event": 1}})
    print("CURATE", run.state.type.value, flush=True)
    deadline = time.monotonic() + 180
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["retrain-on-new-data"])))
            if runs:
                print("TRIGGERED", json.dumps(runs[0].parameters), flush=True)
                break
            time.sleep(2)
        else:
            print("NOT TRIGGERED", flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prefect server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError("prefect server did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_served_curate_run_triggers_retraining(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    db = tmp_path / "s.duckdb"
    records = []
    for i in range(6):
        ins = Instruction(text=f"Tell me fact number {i} about owls.", method="seed")
        records += [ins, Sample(instruction_id=ins.id, response=f"Owls fact {i}: they hunt at night and see well "
                                f"in the dark, number {i}.", method="responses", teacher_model="t")]
    Store(db).ingest(records)

    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    serving = None
    try:
        _wait_healthy(api, server)
        subprocess.run([sys.executable, "-c", APPLY], env=env, cwd=ROOT, check=True, timeout=120)
        serving = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run([sys.executable, "-c", RUN, str(db), str(tmp_path / "exports")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=480)
        assert "CURATE COMPLETED" in out.stdout, out.stdout + out.stderr
        assert "TRIGGERED" in out.stdout and "NOT TRIGGERED" not in out.stdout, out.stdout + out.stderr
        params = json.loads(out.stdout.split("TRIGGERED", 1)[1].strip().splitlines()[0])
        assert params["dataset"] == "sched" and str(params["dataset_version"]) == "1"
    finally:
        if serving is not None:
            _stop(serving)
        _stop(server)
    assert Store(db).query("SELECT name, version FROM datasets") == [{"name": "sched", "version": 1}]
