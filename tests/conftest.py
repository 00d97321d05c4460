"""Shared fixtures: the embedded model is loaded once per test session."""

import pytest

from personavec.models import load_model


@pytest.fixture(scope="session")
def model():
    return load_model()
