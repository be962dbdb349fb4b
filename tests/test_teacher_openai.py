"""The openai backend and the ledger, through the real openai client against the fake server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from generators.teachers.base import ChatRequest
from generators.teachers import build_teacher
from generators.teachers.config import OpenAIConfig, load_teacher_config
from generators.teachers.ledger import LedgeredTeacher
from generators.teachers.limits import TokenBucket
from generators.teachers.openai_backend import OpenAITeacher, parse_retry_after
from generators.teachers.scripted import ScriptedTeacher


def make_teacher(server, **kw) -> OpenAITeacher:
    opts = dict(base_url=server.url, timeout_s=2.0, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05)
    opts.update(kw)
    return OpenAITeacher("fake-model", **opts)


# prompt -> (faults, expected ok, expected error prefix, expected attempts) with max_retries=2
CASES = {
    "plain": ([], True, None, 1),
    "rate limited once": (["429:0.1"], True, None, 2),
    "500 then 503": (["500", "503"], True, None, 3),
    "always 503": (["503"] * 5, False, "http 503", 3),
    "hangs": (["hang:3"] * 5, False, "timeout", 3),
    "dropped": (["drop"] * 5, False, "connection error", 3),
    "malformed": (["malformed"] * 5, False, "parse error", 3),
    "empty": (["empty"], False, "empty content", 1),
    "filtered": (["content_filter"], False, "content_filter", 1),
    "bad request": (["400"], False, "http 400", 1),
    "truncated": (["length"], True, None, 1),
}


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
def test_every_request_completes_or_fails_with_its_reason(fake_openai, store, http_client):
    for prompt, (faults, *_rest) in CASES.items():
        fake_openai.set_faults(prompt, faults)
    teacher = LedgeredTeacher(make_teacher(fake_openai, timeout_s=0.3, http_client=http_client), store, run_id="r1")
    requests = [ChatRequest.chat(p, max_tokens=50) for p in CASES]
    done = teacher.generate(requests)

    assert len(done) == len(requests)
    rows = {r["key"]: r for r in store.query("SELECT * FROM requests")}
    assert len(rows) == len(CASES)
    for request, result in zip(requests, done):
        prompt = request.messages[-1]["content"]
        _faults, ok, reason, attempts = CASES[prompt]
        assert result.ok is ok, (prompt, result.error)
        assert result.attempts == attempts, prompt
        assert fake_openai.counts[prompt] == attempts, prompt
        row = rows[result.key]
        assert row["status"] == ("ok" if ok else "failed")
        assert row["attempts"] == attempts and row["run_id"] == "r1"
        if ok:
            assert result.text and row["response_text"] == result.text and row["error"] is None
        else:
            assert result.text is None and row["response_text"] is None
            assert result.error.startswith(reason) and row["error"] == result.error, prompt
    by_prompt = {r.messages[-1]["content"]: d for r, d in zip(requests, done)}
    assert by_prompt["truncated"].truncated and by_prompt["truncated"].finish_reason == "length"
    assert not by_prompt["plain"].truncated
    assert teacher.last_stats.sent == len(CASES) and teacher.last_stats.failed == 7


def test_retry_after_is_honoured(fake_openai):
    fake_openai.set_faults("slow down", ["429:0.5", "429:0.3"])
    done = make_teacher(fake_openai, backoff_base_s=5.0, backoff_max_s=5.0).generate(
        [ChatRequest.chat("slow down")])[0]
    assert done.ok and done.attempts == 3
    t = fake_openai.times("slow down")
    assert 0.5 <= t[1] - t[0] < 0.5 * 1.1 + 0.25
    assert 0.3 <= t[2] - t[1] < 0.3 * 1.1 + 0.25


def test_backoff_grows_exponentially_with_jitter(fake_openai):
    fake_openai.set_faults("flaky", ["500", "500", "500"])
    teacher = make_teacher(fake_openai, max_retries=3, backoff_base_s=0.1, backoff_max_s=10)
    assert teacher.generate([ChatRequest.chat("flaky")])[0].attempts == 4
    t = fake_openai.times("flaky")
    gaps = [b - a for a, b in zip(t, t[1:])]
    for k, gap in enumerate(gaps):  # equal jitter: between half and all of base * 2**k
        cap = 0.1 * 2**k
        assert cap / 2 <= gap < cap + 0.15, gaps


def test_retry_after_header_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({}) is None


def test_rpm_limit_holds(fake_openai):
    rpm, n = 600, 16  # one request every 0.1 s
    teacher = make_teacher(fake_openai, rpm=rpm, concurrency=8)
    start = time.monotonic()
    done = teacher.generate([ChatRequest.chat(f"q{i}") for i in range(n)])
    assert all(d.ok for d in done)
    t = sorted(fake_openai.times())
    assert len(t) == n
    assert time.monotonic() - start >= (n - 1) * 0.1 * 0.95
    for i, t0 in enumerate(t):  # any 1 s window holds at most rpm/60 (+1 for arrival jitter)
        assert sum(1 for x in t[i:] if x < t0 + 1.0) <= rpm / 60 + 1


def test_concurrency_is_bounded(fake_openai):
    fake_openai.latency = 0.1
    done = make_teacher(fake_openai, concurrency=3).generate([ChatRequest.chat(f"c{i}") for i in range(12)])
    assert all(d.ok for d in done)
    assert fake_openai.max_in_flight == 3


async def test_tpm_bucket_waits_for_refill():
    bucket = TokenBucket(600)  # 10 tokens/s, starts full
    start = time.monotonic()
    await bucket.acquire(600)
    assert time.monotonic() - start < 0.05
    await bucket.acquire(5)  # 0.5 s of refill
    assert 0.4 <= time.monotonic() - start < 0.8
    bucket.settle(5, 0)  # the request used nothing: the 5 tokens come back
    await bucket.acquire(5)
    assert time.monotonic() - start < 0.8


def test_chat_and_completion_logprobs(fake_openai):
    teacher = make_teacher(fake_openai)
    chat, comp = teacher.generate([ChatRequest.chat("lp chat", logprobs=3),
                                   ChatRequest.completion("lp text", logprobs=2)])
    assert chat.ok and [t.token for t in chat.logprobs] == ["echo:", "lp", "chat"]
    assert len(chat.logprobs[0].top) == 3 and chat.logprobs[0].logprob == pytest.approx(-0.1)
    assert comp.ok and comp.text == "echo: lp text" and len(comp.logprobs[1].top) == 2
    assert fake_openai.hits[-1].path in ("/v1/chat/completions", "/v1/completions")
    assert {h.path for h in fake_openai.hits} == {"/v1/chat/completions", "/v1/completions"}


def test_ledger_serves_ok_requests_and_retries_failed_ones(fake_openai, store):
    fake_openai.set_faults("fails once", ["503"] * 3)
    requests = [ChatRequest.chat(p) for p in ("a", "b", "fails once")]
    first = LedgeredTeacher(make_teacher(fake_openai), store).generate(requests)
    assert [d.ok for d in first] == [True, True, False]

    again = LedgeredTeacher(make_teacher(fake_openai), store)
    second = again.generate(requests)
    assert [d.ok for d in second] == [True, True, True]
    assert [d.cached for d in second] == [True, True, False]
    assert second[0].text == first[0].text and second[0].key == first[0].key
    assert dict(fake_openai.counts) == {"a": 1, "b": 1, "fails once": 4}
    assert again.last_stats.cached == 2 and again.last_stats.sent == 1
    rows = store.query("SELECT status, count(*) AS n FROM requests GROUP BY 1")
    assert rows == [{"status": "ok", "n": 3}]


def test_duplicate_keys_in_a_batch_are_sent_once(fake_openai, store):
    base = ChatRequest.chat("same", temperature=0.7)
    requests = [base, base, *base.expand(3), base.model_copy(update={"tag": "x"})]
    teacher = LedgeredTeacher(make_teacher(fake_openai), store)
    done = teacher.generate(requests)
    assert all(d.ok for d in done) and done[-1].tag == "x"
    assert len({d.key for d in done}) == 3
    assert fake_openai.counts["same"] == 3
    assert teacher.last_stats.duplicate == 3
    assert store.query("SELECT count(*) AS n FROM requests")[0]["n"] == 3


def test_logprobs_survive_the_ledger(fake_openai, store):
    request = ChatRequest.chat("keep my logprobs", logprobs=2)
    fresh = LedgeredTeacher(make_teacher(fake_openai), store).generate([request])[0]
    cached = LedgeredTeacher(make_teacher(fake_openai), store).generate([request])[0]
    assert cached.cached and cached.logprobs == fresh.logprobs and cached.text == fresh.text


def test_scripted_teacher_goes_through_the_ledger(store):
    script = ScriptedTeacher({"hi": "hello", "blank": ""})
    teacher = LedgeredTeacher(script, store)
    done = teacher.generate([ChatRequest.chat("hi"), ChatRequest.chat("blank"), ChatRequest.chat("unknown")])
    assert done[0].ok and done[0].text == "hello"
    assert not done[1].ok and done[1].error == "empty content"  # never an empty sample
    assert not done[2].ok and done[2].error.startswith("no scripted answer")
    teacher.generate([ChatRequest.chat("hi")])
    assert len(script.calls) == 3  # "hi" was served from the ledger the second time
    assert {r["status"] for r in store.query("SELECT status FROM requests")} == {"ok", "failed"}


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("database", ["exists", "not yet"])
def test_ledger_finds_ok_answers_only_in_the_journal(tmp_path, store, prefetch, database):
    """Answers spooled but never merged (a crash, or merge=False as the generate flow runs)
    are paid for: both the per-batch lookup and the prefetched keys find them."""
    from storage.store import Store

    if database == "not yet":
        store = Store(tmp_path / "later.duckdb")
    first = ScriptedTeacher({"hi": "hello", "bye": "later"})
    done = LedgeredTeacher(first, store, merge=False).generate([ChatRequest.chat("hi"), ChatRequest.chat("bye")])
    assert [d.ok for d in done] == [True, True] and len(store.journal_segments()) >= 1
    if database == "exists":
        assert store.query("SELECT count(*) AS n FROM requests") == [{"n": 0}]  # journal only

    again = ScriptedTeacher({"hi": "not paid again", "new": "fresh"})
    teacher = LedgeredTeacher(again, store, merge=False, prefetch=prefetch)
    second = teacher.generate([ChatRequest.chat("hi"), ChatRequest.chat("new")])
    assert [(d.text, d.cached) for d in second] == [("hello", True), ("fresh", False)]
    assert [r.messages[-1]["content"] for r in again.calls] == ["new"]
    assert (teacher.last_stats.cached, teacher.last_stats.sent) == (1, 1)
    # Another model's answers in the journal are not this teacher's.
    other = ScriptedTeacher({"hi": "other model"}, model="other")
    assert LedgeredTeacher(other, store, merge=False, prefetch=prefetch).generate([ChatRequest.chat("hi")])[0].cached is False


def test_stream_yields_results_as_they_arrive(fake_openai):
    fake_openai.set_faults("slow", ["slow:0.5"])
    teacher = make_teacher(fake_openai)

    async def run():
        order = []
        async for i, done in teacher.astream([ChatRequest.chat("slow"), ChatRequest.chat("fast")]):
            order.append(i)
        await teacher.adetach()
        return order

    assert asyncio.run(run()) == [1, 0]


SECRET = "sk-test-DoNotLeak-4f9c2e7a81b3"


def test_api_key_never_reaches_db_logs_or_errors(fake_openai, store, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    fake_openai.set_faults("denied", ["401"])
    fake_openai.set_faults("flaky", ["500", "503"])
    config = OpenAIConfig(model="fake-model", base_url=fake_openai.url,
                           api_key_env="DISTILL_TEST_KEY", max_retries=2, backoff_base_s=0.01)
    teacher = build_teacher(config, store=store, run_id="r-secret")
    done = teacher.generate([ChatRequest.chat(p) for p in ("fine", "denied", "flaky")])

    assert [d.ok for d in done] == [True, False, True]
    assert fake_openai.hits[0].headers["authorization"] == f"Bearer {SECRET}"  # it was really used
    assert done[1].error.startswith("http 401") and "***" in done[1].error  # the echo was scrubbed
    texts = [caplog.text, repr(teacher), repr(teacher.inner), config.model_dump_json(), str(done)]
    assert not any(SECRET in t for t in texts)
    for path in tmp_path.rglob("*"):  # the DuckDB file, its WAL, the journal
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in str(store.query("SELECT * FROM requests"))


def test_config_refuses_literal_keys_without_echoing_them(tmp_path):
    path = tmp_path / "teacher.yaml"
    path.write_text(f"teacher:\n  backend: openai\n  model: m\n  api_key: {SECRET}\n")
    from core.errors import InputError

    with pytest.raises(InputError) as err:
        load_teacher_config(path)
    assert "api_key_env" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(Exception) as err2:
        OpenAIConfig(model="m", api_key=SECRET)
    assert SECRET not in str(err2.value)


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    from core.errors import TeacherError

    monkeypatch.delenv("DISTILL_NO_SUCH_KEY", raising=False)
    config = OpenAIConfig(model="m", api_key_env="DISTILL_NO_SUCH_KEY")
    with pytest.raises(TeacherError, match="DISTILL_NO_SUCH_KEY"):
        build_teacher(config)


@pytest.mark.prefect
def test_api_key_from_a_prefect_secret_block(prefect_harness, fake_openai, store, tmp_path, caplog):
    """A real Secret block on the test Prefect API: the key is used, and stays out of the
    config (the flows' Prefect parameters), the database, the journal, logs and errors."""
    from prefect.blocks.system import Secret

    from core.errors import TeacherError

    key = SECRET + "-block"
    Secret(value=key).save("distill-test-key", overwrite=True)
    caplog.set_level(logging.DEBUG)
    config = OpenAIConfig(model="fake-model", base_url=fake_openai.url,
                           prefect_secret="distill-test-key")
    teacher = build_teacher(config, store=store, run_id="r-block")
    done = teacher.generate([ChatRequest.chat("fine")])

    assert done[0].ok
    assert fake_openai.hits[-1].headers["authorization"] == f"Bearer {key}"
    assert key not in config.model_dump_json() and key not in caplog.text and key not in repr(teacher)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    missing = OpenAIConfig(model="m", prefect_secret="no-such-block")
    with pytest.raises(TeacherError, match="cannot load Prefect Secret block 'no-such-block'"):
        missing.resolve_api_key()
