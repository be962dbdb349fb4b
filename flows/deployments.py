"""The deployments in prefect.yaml, as objects: validated in tests, registered by
`distill deploy`, served by `distill serve`.

prefect.yaml is the one declaration (``prefect deploy --all`` registers it in the docker
image, whose code lives in /app). This module reads the same file and builds
``RunnerDeployment``s from it, for this checkout:

    deployments = load_deployments()            # validates entrypoints, parameters, triggers
    deploy_deployments(pool="distill", db=...)   # or: distill deploy (work-pool workers run them)
    serve_deployments(deployments)               # or: distill serve (this process runs them)
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from core.config import read_yaml
from core.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"


def read_prefect_yaml(path: str | Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployment sections of prefect.yaml, checked against Prefect's own model of it."""
    from prefect.cli.deploy._models import PrefectYamlModel

    data = read_yaml(path)
    PrefectYamlModel.model_validate(data)  # what `prefect deploy` accepts
    return list(data.get("deployments") or [])


def _schedules(spec: dict[str, Any]) -> list[Any]:
    from prefect.schedules import Cron, Interval

    out = []
    for s in spec.get("schedules") or []:
        kw = {k: s[k] for k in ("timezone", "active", "parameters", "slug") if k in s}
        if "cron" in s:
            out.append(Cron(s["cron"], day_or=s.get("day_or", True), **kw))
        elif "interval" in s:
            out.append(Interval(datetime.timedelta(seconds=float(s["interval"])), **kw))
        else:
            raise InputError(f"deployment {spec['name']}: only cron and interval schedules are served here")
    return out


def _triggers(spec: dict[str, Any]) -> list[Any]:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    return _initialize_deployment_triggers(spec["name"], [dict(t) for t in spec.get("triggers") or []])


def load_deployments(path: str | Path = PREFECT_YAML, names: list[str] | None = None,
                     db: str | None = None) -> list[Any]:
    """RunnerDeployments for the deployments of prefect.yaml (all, or those named); with
    ``db``, each one's parameters point at that database."""
    from prefect.flows import load_flow_from_entrypoint

    specs = read_prefect_yaml(path)
    known = [s["name"] for s in specs]
    for name in names or []:
        if name not in known:
            raise InputError(f"no deployment named {name!r} in {path} (known: {', '.join(known)})")
    out = []
    for spec in specs:
        if names and spec["name"] not in names:
            continue
        if db is not None:
            spec = with_database(spec, db)
        file, _, func = spec["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{ROOT / file}:{func}")
        flow.validate_parameters(spec.get("parameters") or {})  # the defaults the deployment runs with
        deployment = flow.to_deployment(
            name=spec["name"], description=spec.get("description"), tags=spec.get("tags"),
            parameters=spec.get("parameters") or {}, schedules=_schedules(spec), triggers=_triggers(spec),
        )
        check_against_schema(spec["name"], deployment.parameters, deployment._parameter_openapi_schema)
        out.append(deployment)
    return out


def check_against_schema(name: str, parameters: dict[str, Any], schema: Any) -> None:
    """Refuse parameters the server would refuse: it checks them against the flow's JSON
    schema (not pydantic), where a discriminated union such as ``generate.params`` needs
    its discriminator (``method``) spelled out."""
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = schema.model_dump() if hasattr(schema, "model_dump") else dict(schema)
    try:
        validate(parameters, schema, raise_on_error=True, ignore_required=True)
    except ValidationError as err:
        raise InputError(f"deployment {name}: the server would refuse its parameters: {err}") from None


def with_database(spec: dict[str, Any], db: str) -> dict[str, Any]:
    """A deployment's parameters with the project's database in them, so every deployment
    of one project (and every run a trigger starts) works on the same file."""
    params = dict(spec.get("parameters") or {})
    if spec["entrypoint"].endswith((":pipeline_flow", ":lion_flow")):  # one config parameter holds db
        params["config"] = {**(params.get("config") or {}), "db": db}
    else:
        params["db"] = db
    return {**spec, "parameters": params}


def deploy_deployments(names: list[str] | None = None, *, pool: str = "distill", db: str) -> list[str]:
    """Register the deployments (all, or those named) with the server for ``pool``'s workers,
    creating the pool (a process pool) when it is missing; their runs use database ``db``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    done = []
    for deployment in load_deployments(names=names, db=db):
        # A worker runs the flow from this checkout, wherever `distill deploy` and the worker
        # were started: the entrypoint relative to the checkout (as prefect.yaml writes it),
        # and the flow-run process working in the checkout, where it finds that file and
        # imports this checkout's packages. Prefect's default (the entrypoint relative to
        # deploy's working directory, the flow run in a temporary folder) crashed every run.
        deployment.entrypoint = _relative_entrypoint(deployment.entrypoint)
        deployment.job_variables = {"working_dir": str(ROOT), **(deployment.job_variables or {})}
        deployment.apply(work_pool_name=pool)
        done.append(f"{deployment.flow_name}/{deployment.name}")
    return done


def _relative_entrypoint(entrypoint: str) -> str:
    file, _, func = entrypoint.rpartition(":")
    return f"{Path(file).resolve().relative_to(ROOT)}:{func}"


def serve_deployments(deployments: list[Any]) -> None:
    """Serve deployments from this process until interrupted (needs a Prefect server)."""
    from prefect import serve

    from flows.server import ensure_api_ready

    ensure_api_ready()  # the server `distill serve` started in the background answers first
    serve(*deployments)
