"""Bad input, table-driven, through the CLI boundary: each case exits with status 2, prints exactly one line
that names what is wrong (file, record, field), shows no traceback, and leaves nothing half-written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from seqedit.cli.main import main
from seqedit.data.builtin import builtin_facts_path
from seqedit.models.tiny import build_tiny_model

TINY = {
    "model": "tiny-llama",
    "method": "memit",
    "hparams": {"layers": [1, 2], "v_num_grad_steps": 2, "mom2_corpus": "builtin", "mom2_n_samples": 10,
                "mom2_max_length": 32, "context_count": 1},
    "num_edits": 4,
    "batch_size": 2,
    "probe": {"texts": 4, "prompts": 2, "max_tokens": 16, "pca_k": 2},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private cache, no data directory, and 'tiny-llama' loadable by name (a tiny random model)."""
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    monkeypatch.setenv("SEQEDIT_CACHE_DIR", str(tmp_path / "cache"))
    import seqedit.runner.run as run_module

    real_load = run_module.load

    def load(name: str, **kwargs):  # type: ignore[no-untyped-def]
        if name == "tiny-llama":
            return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)
        return real_load(name, **kwargs)

    monkeypatch.setattr(run_module, "load", load)


def _config(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _facts(tmp_path: Path, name: str, edit: Callable[[list[dict]], None]) -> Path:
    records = json.loads(builtin_facts_path().read_text())
    edit(records)
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _huge_subject(records: list[dict]) -> None:
    records[2]["subject"] = "x" * 2_000_000


def _non_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"case_id": "1", "subject": "Malmö"}]'.encode("latin-1"))
    return path


def _malformed(tmp_path: Path) -> Path:
    path = tmp_path / "broken.json"
    path.write_text('[{"case_id": "1",')
    return path


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "taken"
    path.write_text("not a directory")
    return path


# (case id, arguments given tmp_path, fragments the one line must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("unknown model", lambda t: ["run", str(_config(t, model="no-such-model"))], ["unknown model 'no-such-model'"]),
    ("unknown method", lambda t: ["run", str(_config(t, method="nomethod"))], ["method", "nomethod"]),
    ("unknown dataset", lambda t: ["run", str(_config(t, dataset={"name": "nodataset"}))], ["nodataset"]),
    ("malformed dataset", lambda t: ["run", str(_config(t, dataset={"name": str(_malformed(t))}))],
     ["broken.json", "not valid JSON"]),
    ("non-UTF-8 dataset", lambda t: ["run", str(_config(t, dataset={"name": str(_non_utf8(t))}))],
     ["latin1.json", "UTF-8"]),
    ("2 MB subject", lambda t: ["run", str(_config(t, order_seed=None, dataset={
        "name": str(_facts(t, "huge.json", _huge_subject))}))], ["huge", "builtin-0003", "subject", "context"]),
    ("resume of a missing directory", lambda t: ["run", "--resume", str(t / "nowhere")], ["nowhere", "not a seqedit run"]),
    ("bad YAML in --set", lambda t: ["run", str(_config(t)), "--set", "num_edits=[1,"], ["--set", "num_edits", "YAML"]),
    ("bad YAML in the config", lambda t: ["run", str(_write(t / "bad.yaml", "num_edits: [1,\n"))], ["bad.yaml", "YAML"]),
    ("invalid field", lambda t: ["run", str(_config(t, num_edits=0))], ["num_edits"]),
    ("output path is a file", lambda t: ["run", str(_config(t)), "-o", str(_a_file(t) / "run")],
     ["output_dir", "taken", "not a directory"]),
    ("edited layer out of range", lambda t: ["run", str(_config(t)), "--set", "hparams.layers=[2, 99]"],
     ["hparams.layers", "99", "4 layers"]),
    ("probe layer out of range", lambda t: ["run", str(_config(t)), "--set", "probe.layers=[99]"],
     ["probe.layers", "99"]),
    ("ft-l without its constraint", lambda t: ["run", str(_config(t, method="ft-l", hparams={"norm_constraint": None}))],
     ["norm_constraint"]),
    ("mend without a checkpoint", lambda t: ["run", str(_config(t, method="mend", hparams={}))], ["mend"]),
    ("download while offline", lambda t: ["datasets", "--download", "counterfact", "--data-dir", str(t / "data")],
     ["offline"]),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("args_for", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args_for: Callable[[Path], list[str]], fragments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEQEDIT_OFFLINE", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # the default output_dir (runs/run) would land here
    args = args_for(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    status = main([*args, "--quiet"] if args[0] == "run" else args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("seqedit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == before  # no run directory, no downloaded file, nothing half-written


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "num_edits=[", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("seqedit: error: ")


def test_resume_with_a_changed_experiment_is_refused_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "A"
    config = _config(tmp_path, evaluation={"edit_metrics": False, "activations": False})
    assert main(["run", str(config), "-o", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    status = main(["run", str(config), "--resume", str(run_dir), "--set", "num_edits=2", "--set", "hparams.v_lr=5",
                   "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert "num_edits: 4 -> 2" in err[0] and "hparams.v_lr: null -> 5" in err[0]
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files
    # A safe change (a label) is accepted.
    assert main(["run", "--resume", str(run_dir), "--set", "name=relabelled", "--quiet"]) == 0
