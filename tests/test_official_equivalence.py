"""benchmarks/official_equivalence.py without the official code: it must skip cleanly (exit 0),
and its import stubs must never outlive the import they were installed for."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "official_equivalence.py"


def test_skips_without_official_path():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "skipped, no --official PATH given" in done.stdout


def test_module_stubs_are_restored():
    spec = importlib.util.spec_from_file_location("official_equivalence", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = sys.modules.get("config")
    with mod._modules({"config": mod._stub("config", setup_credentials=lambda: None)}):
        assert sys.modules["config"].__stub__
    assert sys.modules.get("config") is before


def test_missing_official_checkout_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--official", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "not the official release's root" in done.stderr
