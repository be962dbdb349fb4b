"""prefect.yaml: every deployment loads, its parameters validate, its triggers and schedules parse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flows.deployments import PREFECT_YAML, load_deployments, read_prefect_yaml

ROOT = Path(__file__).resolve().parent.parent


def test_prefect_yaml_declares_the_deployments():
    names = [d["name"] for d in read_prefect_yaml()]
    assert names == ["generate", "curate", "train", "retrain-on-new-data", "pipeline"]


def test_every_deployment_loads_with_valid_parameters():
    deployments = {d.name: d for d in load_deployments()}
    assert set(deployments) == {"generate", "curate", "train", "retrain-on-new-data", "pipeline"}
    assert deployments["generate"].entrypoint.endswith("flows/generate.py:generate_flow")
    # The pipeline's one parameter is the whole config, rendered by the UI as a form.
    schema = deployments["pipeline"]._parameter_openapi_schema  # what the UI renders
    assert "config" in schema.properties and "PipelineConfig" in schema.definitions


def test_retraining_is_triggered_by_the_dataset_ready_event():
    from prefect.events import DeploymentEventTrigger

    (d,) = load_deployments(names=["retrain-on-new-data"])
    (trigger,) = d.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {"distill.dataset.ready"}
    assert trigger.parameters == {"dataset": "{{ event.payload.name }}",
                                  "dataset_version": "{{ event.payload.version }}"}
    from flows.curate import EVENT

    assert EVENT == "distill.dataset.ready"


def test_schedules():
    by_name = {d.name: d for d in load_deployments()}
    (generate,) = by_name["generate"].schedules
    assert generate.schedule.cron == "0 2 * * *" and generate.active
    assert not by_name["pipeline"].schedules[0].active


def test_unknown_deployment_name_is_refused():
    from core.errors import InputError

    with pytest.raises(InputError, match="no deployment named 'nope'"):
        load_deployments(names=["nope"])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_docker_compose_file_is_valid():
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_prefect_yaml_is_at_the_root():
    assert PREFECT_YAML == ROOT / "prefect.yaml"


def test_worker_image_copies_every_package():
    """docker/worker.Dockerfile COPYs each package pyproject.toml installs (else the image cannot import it)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {line.split()[1] for line in (ROOT / "docker" / "worker.Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert packages <= copied, f"not copied into the worker image: {sorted(packages - copied)}"
