"""Screenshots of the Prefect UI for the README: the runs list and a generate run's report.

    make ui-screenshot          # or: .venv/bin/python docs/ui_screenshots.py

Starts a server with `distill server start` in a temporary state folder, makes one
generate run against the fake OpenAI-compatible server (tests/fake_openai_server.py),
photographs two pages with headless Chromium (`apt-get install chromium`) and stops the
server again. Writes docs/ui-runs.png and docs/ui-report.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUN_NAME = "ui-demo"
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import spawn_fake_server  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def screenshot(chromium: str, url: str, out: Path, profile: Path) -> None:
    """Headless Chromium's picture of ``url`` at 1400x900, after up to 40 s of (virtual) page
    time: the runs list draws its rows last (at 20 s they were often missing)."""
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--virtual-time-budget=40000", "--window-size=1400,900",
                    "--hide-scrollbars", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="distill-ui-") as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DISTILL_SERVER"}
        env.update(DISTILL_HOME=str(tmp / "state"), DISTILL_DB=str(tmp / "demo.duckdb"), PYTHONPATH=str(ROOT),
                   PREFECT_HOME=str(tmp / "prefect-home"))

        def distill(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=tmp, env=env, text=True,
                                  capture_output=True, timeout=300)
            if done.returncode != 0:
                sys.exit(f"distill {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
            return done.stdout

        distill("server", "start", "--port", str(_free_port()))
        try:
            api = json.loads((tmp / "state" / "server.json").read_text())["url"]
            ui = api.removesuffix("/api")
            instructions = tmp / "instructions.jsonl"
            instructions.write_text("".join(
                json.dumps({"instruction": f"Give one practical tip about topic number {i}."}) + "\n"
                for i in range(24)))
            with spawn_fake_server(latency=0.05) as url:
                distill("generate", "--method", "responses", "--target", "16", "--batch-size", "4",
                        "--instructions-file", str(instructions), "--run-name", RUN_NAME,
                        "--set", "teacher.backend=openai", "--set", "teacher.model=fake-teacher",
                        "--set", f"teacher.base_url={url}")
            (run,) = _post(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [f"generate-{RUN_NAME}"]}}})
            (report,) = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]},
                                                                       "type": {"any_": ["markdown"]}}})
            screenshot(chromium, f"{ui}/runs", DOCS / "ui-runs.png", tmp / "profile-runs")
            screenshot(chromium, f"{ui}/artifacts/artifact/{report['id']}", DOCS / "ui-report.png",
                       tmp / "profile-report")
        finally:
            distill("server", "stop")


if __name__ == "__main__":
    main()
