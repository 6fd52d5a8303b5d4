"""``seqedit run --threads N -q`` on a tiny model: threads recorded, key-statistics bar silenced, the
one-off statistics time reported apart from the seconds per edit."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from seqedit.cli.main import app
from seqedit.models.tiny import build_tiny_model
from seqedit.runner import run as run_module

TINY = [
    "model=tiny-llama",
    "method=memit",
    "hparams={layers: [1, 2], v_num_grad_steps: 3, mom2_corpus: builtin, mom2_n_samples: 12, "
    "mom2_max_length: 48, context_count: 1}",
    "num_edits=2",
    "batch_size=2",
    "probe={texts: 4, prompts: 2, max_tokens: 16, pca_k: 2}",
    "evaluation={batch_size: 8, perplexity: false, activations: false}",
    "track={groups: [edited], spectral: false}",
]


@pytest.fixture
def tiny_load(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    monkeypatch.setenv("SEQEDIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(run_module, "load", lambda *a, **k: build_tiny_model("llama", num_layers=4, hidden=48))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, name: str, *options: str):
    args = ["run", "--output-dir", str(tmp_path / name), *options]
    for override in TINY:
        args += ["--set", override]
    return CliRunner().invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})


def test_threads_and_quiet(tiny_load, tmp_path):
    loud = _run(tmp_path, "loud", "--threads", "1")
    assert loud.exit_code == 0, loud.output
    # (whether the loud run draws its bar depends on the terminal: rich draws none under CI=true)
    assert "key statistics, one-off seconds (computed)" in loud.output

    quiet = _run(tmp_path, "quiet", "-q", "--threads", "2")
    assert quiet.exit_code == 0, quiet.output
    assert "2/2 edits" not in quiet.output and "key statistics, layers" not in quiet.output
    assert "key statistics, one-off seconds (read from the cache)" in quiet.output
    assert json.loads((tmp_path / "quiet" / "environment.json").read_text())["torch_threads"] == 2
    assert json.loads((tmp_path / "loud" / "environment.json").read_text())["torch_threads"] == 1
