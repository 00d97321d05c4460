"""Shared fixtures: the embedded model is loaded once per test session."""

import pytest
import torch

from personavec.core.models import load_model


@pytest.fixture(scope="session")
def model():
    return load_model()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (tiny models, or a CPU shared with other processes, run
    faster so); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
