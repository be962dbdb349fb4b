"""Shared pytest fixtures. Each concern adds its own, with a line saying what it is for."""

# Teachers: a fake OpenAI-compatible server with injectable faults (``fake_openai``).
from fake_openai_server import _fake_openai_session, fake_openai  # noqa: F401
