"""The run directory under faults: kills at any moment, two processes, foreign directories, leftovers, modes.

A run killed anywhere (before its baseline is recorded, in a step, while writing checkpoints, ledgers,
state or snapshots) and resumed must end with the same tables (no duplicated rows) and bit-identical
weights as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from seqedit.editors.base import EditResult
from seqedit.models.tiny import build_tiny_model
from seqedit.runner import run as run_module
from seqedit.runner.config import ConfigError
from seqedit.runner.run import SequentialRun, resume_experiment, run_experiment
from seqedit.runner.store import LOCK_NAME, RunDirectoryError, RunStore
from seqedit.utils import io as io_module

TABLES = ("norms", "checkpoints", "requests", "timings")
TIMING_COLUMNS = ("total_s", "statistics_from_cache")  # how long, and whether a cache was warm: not results


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way treats it as an ordinary error."""


def _tiny():
    return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)


def _tables(run_dir: Path) -> dict[str, list[dict]]:
    store = RunStore(run_dir)
    return {
        t: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS and not k.startswith("phase_")} for r in store.read(t)]
        for t in TABLES
    }


def _weights(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def _assert_same_run(reference: tuple[dict, dict], run_dir: Path, lm) -> None:
    tables, weights = reference
    assert _tables(run_dir) == tables
    for name, value in _weights(lm).items():
        assert torch.equal(value.view(torch.int32), weights[name].view(torch.int32)), name
    progress = RunStore(run_dir).read_progress()
    assert progress["status"] == "finished" and progress["baseline_complete"] is True


@pytest.fixture
def uninterrupted(tmp_path, tiny_run_config, monkeypatch):
    """Tables and final weights of the run without faults (snapshots every 2 steps, as in the faulty runs)."""
    monkeypatch.setattr(run_module, "SNAPSHOT_EVERY", 2)
    lm = _tiny()
    outcome = run_experiment(tiny_run_config(tmp_path, "reference"), lm=lm, show_progress=False)
    assert outcome.status == "finished" and outcome.completed_steps == 3
    return _tables(outcome.run_dir), _weights(lm)


def _kill_on(monkeypatch, target: object, attribute: str, when) -> None:
    """Make ``target.attribute`` raise :class:`Killed` on the first call for which ``when(*args)`` holds."""
    original = getattr(target, attribute)
    fired = []

    def wrapper(*args, **kwargs):
        if not fired and when(*args, **kwargs):
            fired.append(True)
            raise Killed(attribute)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, wrapper)


# Where the kill happens: (target, attribute, condition on the call's arguments).
KILL_POINTS = {
    "baseline: after the norms rows": (RunStore, "append", lambda self, table, rows: table == "checkpoints"),
    "baseline: state written, not yet recorded": (
        RunStore, "write_progress", lambda self, **kw: kw.get("message", "").startswith("baseline")),
    "step 2: after its norms rows": (
        RunStore, "append", lambda self, table, rows: table == "timings" and rows[0]["step"] == 2),
    "step 2: during its checkpoint rows": (
        RunStore, "append", lambda self, table, rows: table == "checkpoints" and rows[0]["step"] == 2),
    "step 2: writing its ledger": (RunStore, "save_ledger", lambda self, step, result: step == 2),
    "step 2: writing its state": (RunStore, "save_state", lambda self, name, step, *a, **k: step == 2),
    "step 2: writing its weight snapshot": (RunStore, "save_snapshot", lambda self, step, w: step == 2),
    "step 3: state written, not yet recorded": (
        RunStore, "write_progress", lambda self, **kw: kw.get("completed_steps") == 3),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
@pytest.mark.parametrize("marked_failed", [True, False], ids=["error", "kill-9"])
def test_killed_run_resumes_to_the_uninterrupted_result(
    point, marked_failed, tmp_path, tiny_run_config, monkeypatch, uninterrupted
):
    config = tiny_run_config(tmp_path, "killed")
    with monkeypatch.context() as patch:
        target, attribute, when = KILL_POINTS[point]
        _kill_on(patch, target, attribute, when)
        if not marked_failed:  # a kill -9 runs no handler: the directory still says "running"
            patch.setattr(SequentialRun, "_mark_failed", lambda self, exc: None)
        with pytest.raises(Killed):
            run_experiment(config, lm=_tiny(), show_progress=False)
    progress = RunStore(config.output_dir).read_progress()
    assert progress["status"] == ("failed" if marked_failed else "running")
    if marked_failed:
        assert "Killed" in progress["message"] and "--resume" in progress["message"]
    lm = _tiny()
    outcome = resume_experiment(config.output_dir, lm=lm, show_progress=False)
    assert outcome.status == "finished"
    _assert_same_run(uninterrupted, config.output_dir, lm)
    assert not list(Path(config.output_dir).rglob("*.tmp"))
    # Only the newest snapshot and the newest step's state remain.
    assert sorted(p.name for p in (config.output_dir / "snapshots").iterdir()) == ["weights_step_000002.safetensors"]
    assert {p.name.split("_step_")[0] for p in (config.output_dir / "state").glob("*.json")} == {"editor", "monitor"}
    assert all(p.name.endswith("_step_000003.json") for p in (config.output_dir / "state").glob("*.json"))


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from seqedit.models.tiny import build_tiny_model
    from seqedit.runner import run as run_module
    from seqedit.runner.config import RunConfig
    from seqedit.runner.store import RunStore
    from seqedit.utils import io

    point, config_json = sys.argv[1], sys.argv[2]
    run_module.SNAPSHOT_EVERY = 2

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "baseline":  # the baseline's rows and state are on disk, its completion not yet recorded
        original = RunStore.write_progress
        def write_progress(self, **kw):
            if kw.get("message", "").startswith("baseline"):
                die()
            return original(self, **kw)
        RunStore.write_progress = write_progress
    else:  # half-way through the atomic write of step 2's ledger: a temporary file is left behind
        original = io.save_file
        def save_file(tensors, path, metadata=None):
            original(tensors, path, metadata=metadata)
            if "step_000002" in path:
                die()
        io.save_file = save_file
    lm = build_tiny_model("llama", num_layers=4, hidden=48, seed=3)
    run_module.run_experiment(RunConfig.model_validate_json(config_json), lm=lm, show_progress=False)
    """
)


@pytest.mark.parametrize("point", ["baseline", "ledger"])
def test_kill_9_in_a_subprocess_then_resume(point, tmp_path, tiny_run_config, monkeypatch, uninterrupted):
    config = tiny_run_config(tmp_path, "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, point, config.model_dump_json()], env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    store = RunStore(config.output_dir)
    assert store.read_progress()["status"] == "running"
    if point == "ledger":
        assert list((config.output_dir / "ledger").glob(".*.tmp")), "the kill should leave a temporary file"
    else:
        assert store.read_progress()["baseline_complete"] is False and store.read("norms")
    lm = _tiny()
    assert resume_experiment(config.output_dir, lm=lm, show_progress=False).status == "finished"
    _assert_same_run(uninterrupted, config.output_dir, lm)
    assert not list(Path(config.output_dir).rglob("*.tmp"))


def test_resume_starts_from_the_newest_snapshot(tmp_path, tiny_run_config, monkeypatch):
    monkeypatch.setattr(run_module, "SNAPSHOT_EVERY", 2)
    reference = _tiny()
    run_experiment(tiny_run_config(tmp_path, "reference", num_edits=8), lm=reference, show_progress=False)
    config = tiny_run_config(tmp_path, "parts", num_edits=8)
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=3)
    # The weights after step 2 come from the snapshot: only step 3's deltas are added again (the ledger of
    # steps 1-2 is still read, to sum the norm monitor's cumulative deltas).
    progress = RunStore(config.output_dir).read_progress()
    assert progress["completed_steps"] == 3 and progress["status"] == "running"
    replayed = []
    original = EditResult.replay
    monkeypatch.setattr(EditResult, "replay", lambda self, model: (replayed.append(self), original(self, model)))
    lm = _tiny()
    with monkeypatch.context() as patch:
        patch.setattr(run_module.SequentialRun, "_loop", lambda self, *a, **k: None)  # stop after restoring
        resume_experiment(config.output_dir, lm=lm, show_progress=False)
    assert len(replayed) == 1
    lm = _tiny()
    assert resume_experiment(config.output_dir, lm=lm, show_progress=False).status == "finished"
    for name, value in _weights(lm).items():
        assert torch.equal(value, _weights(reference)[name]), name


# ---------------------------------------------------------------------------------------------- the lock
def test_a_second_process_is_refused_while_the_run_is_locked(tmp_path, tiny_run_config):
    from typer.testing import CliRunner

    from seqedit.cli.main import app

    config = tiny_run_config(tmp_path, num_edits=4)
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=1)
    store = RunStore(config.output_dir)
    before = {t: store.table_path(t).read_bytes() for t in ("norms", "checkpoints")}
    with store.locked():  # another open file description: flock treats it as another holder
        with pytest.raises(RunDirectoryError, match=rf"in use by pid {os.getpid()} on "):
            resume_experiment(config.output_dir, lm=_tiny(), show_progress=False)
        result = CliRunner().invoke(app, ["run", "--resume", str(config.output_dir), "--quiet"])
        assert result.exit_code == 2
        assert f"in use by pid {os.getpid()}" in " ".join(result.output.split())
        assert {t: store.table_path(t).read_bytes() for t in before} == before
    assert "pid" in (config.output_dir / LOCK_NAME).read_text()
    # Released: the run resumes.
    assert resume_experiment(config.output_dir, lm=_tiny(), show_progress=False).status == "finished"


# ---------------------------------------------------------------------------------------------- foreign dirs
def test_a_non_empty_directory_that_is_not_a_run_is_refused_untouched(tmp_path, tiny_run_config):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "norms.jsonl").write_text('{"step": 0, "stale": true}\n')
    config = tiny_run_config(tmp_path, "foreign")
    with pytest.raises(RunDirectoryError, match="not empty and is not a seqedit run directory"):
        run_experiment(config, lm=_tiny(), show_progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["norms.jsonl"]
    with pytest.raises(RunDirectoryError, match="not a seqedit run directory"):
        resume_experiment(foreign, lm=_tiny(), show_progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["norms.jsonl"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file|is not a directory"):  # validation or the store: either names it
        run_experiment(tiny_run_config(tmp_path, "a-file"), lm=_tiny(), show_progress=False)


# ---------------------------------------------------------------------------------------------- failures
def test_failure_at_the_baseline_is_marked_and_a_fresh_run_may_replace_it(tmp_path, tiny_run_config, monkeypatch):
    config = tiny_run_config(tmp_path, num_edits=4)
    with monkeypatch.context() as patch:
        def broken(self, *args, **kwargs):
            raise ValueError("probe text longer than the context")

        patch.setattr(run_module.Measurements, "checkpoint", broken)
        with pytest.raises(ValueError, match="probe text"):
            run_experiment(config, lm=_tiny(), show_progress=False)
    progress = RunStore(config.output_dir).read_progress()
    assert progress["status"] == "failed" and progress["completed_steps"] == 0
    assert "baseline" in progress["message"] and "probe text longer" in progress["message"]
    # Nothing was completed: a fresh run may start there, and it starts clean (no stale baseline rows).
    outcome = run_experiment(config, lm=_tiny(), show_progress=False)
    assert outcome.status == "finished"
    norms = RunStore(config.output_dir).read("norms")
    assert len([r for r in norms if r["step"] == 0]) == len([r for r in norms if r["step"] == 1])


def test_failure_after_a_step_is_marked_resumable_and_not_overwritten(tmp_path, tiny_run_config, monkeypatch):
    config = tiny_run_config(tmp_path, num_edits=4)
    with monkeypatch.context() as patch:
        calls = []
        original = run_module.Measurements.after_step

        def flaky(self, step, *args, **kwargs):
            calls.append(step)
            if step == 2:
                raise RuntimeError("disk full")
            return original(self, step, *args, **kwargs)

        patch.setattr(run_module.Measurements, "after_step", flaky)
        with pytest.raises(RuntimeError, match="disk full"):
            run_experiment(config, lm=_tiny(), show_progress=False)
    progress = RunStore(config.output_dir).read_progress()
    assert (progress["status"], progress["completed_steps"]) == ("failed", 1)
    assert "step 2" in progress["message"] and "disk full" in progress["message"]
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        run_experiment(config, lm=_tiny(), show_progress=False)
    assert resume_experiment(config.output_dir, lm=_tiny(), show_progress=False).status == "finished"


# ---------------------------------------------------------------------------------------------- files
def test_leftover_temporary_files_are_removed_on_resume(tmp_path, tiny_run_config):
    config = tiny_run_config(tmp_path, num_edits=4)
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=1)
    root = config.output_dir
    leftovers = [root / "ledger" / ".step_000002.safetensors.ab12.tmp", root / "state" / ".editor_step_000002.x.tmp",
                 root / ".norms.jsonl.q.tmp"]
    for file in leftovers:
        file.write_bytes(b"\0" * 100)
    keep = root / "notes.tmp"  # not one of ours (no leading dot): left alone
    keep.write_text("mine")
    assert resume_experiment(root, lm=_tiny(), show_progress=False).status == "finished"
    assert not any(f.exists() for f in leftovers) and keep.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_mode_of_normal_files(umask, tmp_path, tiny_run_config):
    old = os.umask(umask)
    try:
        config = tiny_run_config(tmp_path, num_edits=4)
        run_experiment(config, lm=_tiny(), show_progress=False)
    finally:
        os.umask(old)
    files = [p for p in config.output_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".parquet" for p in files)
    modes = {p.relative_to(config.output_dir).as_posix(): p.stat().st_mode & 0o777 for p in files}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("{}")
    target.chmod(0o600)
    io_module.write_json_atomic(target, {"a": 1})
    assert target.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------------------------- ledger size
def test_the_ledger_stores_locate_edits_compactly_and_exactly(tmp_path, tiny_run_config):
    lm = _tiny()
    base = _weights(lm)
    config = tiny_run_config(tmp_path, num_edits=4)
    run_experiment(config, lm=lm, show_progress=False)
    store = RunStore(config.output_dir)
    rebuilt = _tiny()
    for step in (1, 2):
        path = store.ledger_path(step)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
        assert keys and all("::" in k for k in keys), keys  # factors, no dense delta
        dense_bytes = sum(t.numel() * 4 for t in store.load_ledger(step).deltas.values())
        assert path.stat().st_size < dense_bytes
        store.load_ledger(step).replay(rebuilt.model)
    after = _weights(rebuilt)
    for name, value in _weights(lm).items():
        assert torch.equal(value.view(torch.int32), after[name].view(torch.int32)), name
    assert any(not torch.equal(base[n], v) for n, v in after.items())


def test_a_dense_ledger_of_an_earlier_version_still_loads(tmp_path):
    delta = torch.randn(6, 5)
    result = EditResult("memit", {"w": delta}, precise={"w": delta.double()})
    result.save(tmp_path / "dense.safetensors", compact=False)
    loaded = EditResult.load(tmp_path / "dense.safetensors")
    assert torch.equal(loaded.deltas["w"], delta)


def test_a_run_directory_of_the_earlier_format_resumes(tmp_path, tiny_run_config, monkeypatch, uninterrupted):
    """Dense ledgers, one state file per step holding everything, no snapshots, no baseline flag."""
    import json

    from seqedit.utils.io import save_tensors_atomic, write_json_atomic

    config = tiny_run_config(tmp_path, "old", num_edits=6)
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_measured_again", lambda key: False)  # the earlier format stored everything
        patch.setattr(run_module, "_measured_again_or_in_ledger", lambda key: False)
        patch.setattr(run_module, "SNAPSHOT_EVERY", 1000)
        run_experiment(config, lm=_tiny(), show_progress=False, max_steps=2)
    store = RunStore(config.output_dir)
    for name in ("editor", "monitor"):
        tensors, meta = store.load_state(name, 2)
        for file in store.state_dir.glob(f"{name}_step_*"):
            file.unlink()
        save_tensors_atomic(store.state_path(name, 2), tensors, {"json": json.dumps(meta)})
    for step in (1, 2):
        EditResult.load(store.ledger_path(step)).save(store.ledger_path(step), compact=False)
    progress = store.read_progress()
    del progress["baseline_complete"]
    write_json_atomic(store.progress_path, progress)
    assert not (config.output_dir / "snapshots").exists()

    lm = _tiny()
    assert resume_experiment(config.output_dir, lm=lm, show_progress=False).status == "finished"
    _assert_same_run(uninterrupted, config.output_dir, lm)
    assert not list(store.state_dir.glob("*_step_000002*"))  # the old state files are pruned


def _monitor_manifest(run_dir: Path, step: int) -> dict[str, list]:
    import json

    return json.loads(RunStore(run_dir).manifest_path("monitor", step).read_text(encoding="utf-8"))["tensors"]


def test_the_cumulative_deltas_are_summed_again_from_the_ledger(tmp_path, tiny_run_config, monkeypatch, uninterrupted):
    """With a ledger, the norm monitor's Σ Δ is recorded by checksum only and rebuilt on resume, exactly."""
    config = tiny_run_config(tmp_path, "parts")
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=2)
    entries = _monitor_manifest(config.output_dir, 2)
    sums = {k: v for k, v in entries.items() if k.startswith(run_module.CUMULATIVE_DELTA)}
    assert sums and all(blob is None for blob, _ in sums.values())
    lm = _tiny()
    assert resume_experiment(config.output_dir, lm=lm, show_progress=False).status == "finished"
    _assert_same_run(uninterrupted, config.output_dir, lm)


def test_a_ledger_that_does_not_sum_to_the_recorded_deltas_is_refused(tmp_path, tiny_run_config, monkeypatch):
    from seqedit.monitor.norms import NormMonitor

    config = tiny_run_config(tmp_path, "parts")
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=2)
    original = NormMonitor.cumulative_from

    def off_by_one_ulp(self, steps):
        return {k: torch.nextafter(v, v + 1) for k, v in original(self, steps).items()}

    monkeypatch.setattr(NormMonitor, "cumulative_from", off_by_one_ulp)
    with pytest.raises(RunDirectoryError, match="do not sum to the recorded norms.cumulative/"):
        resume_experiment(config.output_dir, lm=_tiny(), show_progress=False)


def test_without_a_ledger_the_cumulative_deltas_are_stored(tmp_path, tiny_run_config, uninterrupted):
    config = tiny_run_config(tmp_path, "no-ledger", save_ledger=False)
    run_experiment(config, lm=_tiny(), show_progress=False, max_steps=2)
    sums = {k: v for k, v in _monitor_manifest(config.output_dir, 2).items()
            if k.startswith(run_module.CUMULATIVE_DELTA)}
    assert sums and all(blob is not None for blob, _ in sums.values())
    lm = _tiny()
    assert resume_experiment(config.output_dir, lm=lm, show_progress=False).status == "finished"
    tables, _ = uninterrupted
    assert _tables(config.output_dir)["norms"] == tables["norms"]
