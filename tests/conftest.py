"""Shared test set-up: one thread for torch/BLAS, seeded RNGs, paths to the real data and fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("POLARS_MAX_THREADS", "1")
os.environ.setdefault("TRAIT_AUDIT_THREADS", "1")  # one core: tiny builds and the probe's side-by-side students
os.environ.pop("OPENAI_API_KEY", None)  # tests never reach a real API
os.environ.setdefault("TRAIT_AUDIT_DEVICE", "cpu")  # CPU stays the default in tests, GPU or not; GPU tests ask for cuda themselves

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# tests never read or fill the user's cache (call cache, probe students, persona vectors, gradients): one of their own
os.environ["TRAIT_AUDIT_CACHE"] = tempfile.mkdtemp(prefix="trait-audit-tests-cache-")
atexit.register(shutil.rmtree, os.environ["TRAIT_AUDIT_CACHE"], True)

import hashlib  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
FIXTURES = ROOT / "fixtures"
NANO_RAW = REAL / "gpt-4.1-nano-control" / "raw.jsonl"
NANO_FILTERED = REAL / "gpt-4.1-nano-control" / "filtered.jsonl"


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
    except ImportError:
        pass


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def need_real_data():
    if not NANO_RAW.exists():
        pytest.skip(f"real teacher data not found at {REAL}")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache folder holding the tiny family's small "test" profile: its base ships with the package (read in place),
    its owl teacher is fine-tuned from it once per session (seconds on one thread).

    Tests that reach the family through `tiny:NAME` references set TRAIT_AUDIT_CACHE to this folder
    and TRAIT_AUDIT_TINY_PROFILE to "test" (see `tiny_env`); nothing is read from the user's cache.
    """
    from auditor.models import tiny

    root = tmp_path_factory.mktemp("tiny-cache")
    before = {k: os.environ.get(k) for k in ("TRAIT_AUDIT_CACHE", "TRAIT_AUDIT_TINY_PROFILE")}
    os.environ["TRAIT_AUDIT_CACHE"], os.environ["TRAIT_AUDIT_TINY_PROFILE"] = str(root), "test"
    try:
        import torch

        torch.set_num_threads(1)
        tiny.tiny_model_path("owl")
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root


@pytest.fixture
def tiny_env(tiny_cache, monkeypatch):
    """`tiny:NAME` references resolve to the session's small test family."""
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tiny_cache))
    monkeypatch.setenv("TRAIT_AUDIT_TINY_PROFILE", "test")
    return tiny_cache
