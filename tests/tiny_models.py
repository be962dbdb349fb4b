"""Training tests' fixtures: one torch thread per module, and a tiny student and teacher."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine two torch
    threads run ~10x slower than one (they spin waiting for each other). A module uses it
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """(student, teacher) checkpoint folders: random LLaMAs of 2 and 4 layers sharing a tokenizer."""
    from training.testing import tiny_llama

    root = tmp_path_factory.mktemp("models")
    return tiny_llama(root / "student", num_layers=2), tiny_llama(root / "teacher", num_layers=4, seed=1)
