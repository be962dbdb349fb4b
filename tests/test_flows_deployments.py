"""prefect.yaml: every deployment loads, its parameters validate, its triggers and schedules parse."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flows.deployments import PREFECT_YAML, load_deployments, read_prefect_yaml

ROOT = Path(__file__).resolve().parent.parent


def test_prefect_yaml_declares_the_deployments():
    names = [d["name"] for d in read_prefect_yaml()]
    assert names == ["generate", "curate", "train", "retrain-on-new-data", "pipeline", "lion"]


def test_every_deployment_loads_with_valid_parameters():
    deployments = {d.name: d for d in load_deployments()}
    assert set(deployments) == {"generate", "curate", "train", "retrain-on-new-data", "pipeline", "lion"}
    assert deployments["generate"].entrypoint.endswith("flows/generate.py:generate_flow")
    # The pipeline's one parameter is the whole config, rendered by the UI as a form.
    schema = deployments["pipeline"]._parameter_openapi_schema  # what the UI renders
    assert "config" in schema.properties and "PipelineConfig" in schema.definitions
    lion = deployments["lion"]
    assert lion.entrypoint.endswith("flows/lion.py:lion_flow")
    schema = lion._parameter_openapi_schema
    assert {"config", "iterations"} <= set(schema.properties) and "LionConfig" in schema.definitions


def test_retraining_is_triggered_by_the_dataset_ready_event():
    from prefect.events import DeploymentEventTrigger

    (d,) = load_deployments(names=["retrain-on-new-data"])
    (trigger,) = d.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {"distill.dataset.ready"}
    assert trigger.parameters == {"db": "{{ event.payload.db }}", "dataset": "{{ event.payload.name }}",
                                  "dataset_version": "{{ event.payload.version }}"}
    from flows.curate import EVENT

    assert EVENT == "distill.dataset.ready"


def test_schedules():
    by_name = {d.name: d for d in load_deployments()}
    (generate,) = by_name["generate"].schedules
    assert generate.schedule.cron == "0 2 * * *" and generate.active
    assert not by_name["pipeline"].schedules[0].active
    # Each scheduled run gets its own run name (and so adds new data); see flows/runs.py.
    assert by_name["generate"].parameters["run_name"] == "nightly-{scheduled}"


def test_a_scheduled_run_name_comes_from_its_scheduled_start(monkeypatch):
    import datetime

    from prefect.runtime import flow_run

    from flows.runs import flow_run_name, resolve_run_name

    when = datetime.datetime(2026, 12, 1, 2, 0, tzinfo=datetime.timezone.utc)
    monkeypatch.setitem(flow_run.FIELDS, "scheduled_start_time", lambda: when)
    monkeypatch.setitem(flow_run.FIELDS, "parameters", lambda: {"run_name": "nightly-{scheduled}"})
    assert resolve_run_name("nightly-{scheduled}") == "nightly-2026-12-01T02-00"
    assert resolve_run_name("adhoc") == "adhoc"
    assert flow_run_name("generate")() == "generate-nightly-2026-12-01T02-00"


def test_unknown_deployment_name_is_refused():
    from core.errors import InputError

    with pytest.raises(InputError, match="no deployment named 'nope'"):
        load_deployments(names=["nope"])


needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose (Debian package) not installed")
GPU_ENV = ROOT / "docker" / "gpu.env"
VLLM_URL = "http://vllm:8000/v1"


def _compose(options: tuple[str, ...], *command: str) -> subprocess.CompletedProcess:
    """``docker-compose OPTIONS -f docker-compose.yml COMMAND`` from the repo root, in an environment
    without the variables the file reads (so what is tested is the file's defaults)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISTILL_", "VLLM_", "COMPOSE_", "HF_")) and k != "HUGGING_FACE_HUB_TOKEN"}
    return subprocess.run(["docker-compose", *options, "-f", str(ROOT / "docker-compose.yml"), *command],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def _services(*options: str) -> dict:
    out = _compose(options, "config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


@needs_compose
@pytest.mark.parametrize("options", [(), ("--profile", "gpu"), ("--env-file", str(GPU_ENV))],
                         ids=["default", "gpu-profile", "gpu-env-file"])
def test_docker_compose_file_is_valid(options):
    out = _compose(options, "config", "-q")
    assert out.returncode == 0, out.stderr


@needs_compose
def test_vllm_service_is_a_gpu_only_teacher_server():
    services = _services()
    vllm = services["vllm"]
    # docker-compose 1.29's `config` lists every service; `profiles` is what keeps vllm out of a plain `up`.
    assert vllm["profiles"] == ["gpu"]
    assert {name for name, s in services.items() if "profiles" not in s} == {"postgres", "prefect-server", "worker"}
    assert vllm["image"] == "vllm/vllm-openai:v0.32.0"  # a pinned release (VLLM_TAG), never :latest
    assert "--model HuggingFaceTB/SmolLM2-1.7B-Instruct" in vllm["command"]  # VLLM_MODEL's default
    check = " ".join(vllm["healthcheck"]["test"])
    assert "http://localhost:8000/health" in check
    (gpu,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    assert vllm["volumes"] == ["hf-cache:/root/.cache/huggingface:rw"]
    assert vllm["environment"]["HF_HOME"] == "/root/.cache/huggingface"
    # Tokens pass through from the caller's environment; the file holds no value.
    assert vllm["environment"]["HF_TOKEN"] is None and vllm["environment"]["HUGGING_FACE_HUB_TOKEN"] is None


@needs_compose
def test_gpu_env_file_turns_the_profile_on_and_points_the_worker_at_vllm():
    from generators.teachers.config import VLLMConfig, teacher_config

    settings = dict(line.split("=", 1) for line in GPU_ENV.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#"))
    assert settings["COMPOSE_PROFILES"] == "gpu"

    worker = _services("--env-file", str(GPU_ENV))["worker"]["environment"]
    assert worker["DISTILL_TEACHER_BACKEND"] == "vllm"
    assert worker["DISTILL_TEACHER_BASE_URL"] == VLLM_URL
    # What the worker's config loader builds from them: a vLLM teacher attached to the service.
    teacher = teacher_config({"backend": worker["DISTILL_TEACHER_BACKEND"],
                              "base_url": worker["DISTILL_TEACHER_BASE_URL"]})
    assert isinstance(teacher, VLLMConfig) and teacher.base_url == VLLM_URL

    # Without the env file the variables are empty (= unset): the CPU setup is unchanged.
    plain = _services()["worker"]["environment"]
    assert [plain[k] for k in ("DISTILL_TEACHER_BACKEND", "DISTILL_TEACHER_BASE_URL", "DISTILL_TEACHER_MODEL")] \
        == ["", "", ""]


def test_worker_image_copies_every_package():
    """docker/worker.Dockerfile COPYs each package pyproject.toml installs (else the image cannot import it)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {line.split()[1] for line in (ROOT / "docker" / "worker.Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert packages <= copied, f"not copied into the worker image: {sorted(packages - copied)}"


def test_prefect_yaml_is_at_the_root():
    assert PREFECT_YAML == ROOT / "prefect.yaml"
