"""`distill teacher ask` against the fake server, with and without the ledger."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli_teacher import app


def test_ask_prints_the_answer_and_uses_the_ledger(fake_openai, tmp_path):
    runner = CliRunner()
    args = ["ask", "what now", "--backend", "openai", "--model", "fake", "--base-url", fake_openai.url,
            "--db", str(tmp_path / "cli.duckdb"), "--logprobs", "1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "echo: what now" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "from the ledger" in second.output
    assert fake_openai.counts["what now"] == 1


def test_ask_reports_a_failure(fake_openai):
    fake_openai.set_faults("nope", ["400"])
    result = CliRunner().invoke(app, ["ask", "nope", "--backend", "openai", "--model", "fake",
                                      "--base-url", fake_openai.url])
    assert result.exit_code != 0 and "http 400" in str(result.exception)
