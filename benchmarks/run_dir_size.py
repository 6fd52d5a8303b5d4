"""Disk use of a run directory, and the time a resume takes to restore its model.

Runs a short sequential experiment (default: MEMIT with the embedded model's defaults, 30 CounterFact edits
in batches of 10, norm tracking and the activation monitor on, edit/perplexity/downstream metrics off:
they add only table rows), then

* measures the directory by part: ledger (per step), editor and monitor state, weight snapshot, tables;
* computes what the earlier format wrote: every delta dense, the full state rewritten every step;
* extrapolates to 1,000 edits: ledger and tables grow per step, the state and the newest snapshot do not;
* times a resume's model restore on a fresh base model: loading the snapshot, and loading + replaying each
  ledger step; a resume after step s replays the ``s mod SNAPSHOT_EVERY`` steps after the newest snapshot.

Timings are taken as the run is: under ``nice``, one thread, on a machine shared with other jobs.

    PYTHONPATH=src SEQEDIT_CACHE_DIR=... SEQEDIT_DATA_DIR=... OMP_NUM_THREADS=1 nice -n 15 \\
        python benchmarks/run_dir_size.py --edits 30 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

from seqedit.editors.base import EditResult
from seqedit.editors.registry import create_editor
from seqedit.models.loading import LoadedModel, load
from seqedit.models.tiny import build_tiny_model
from seqedit.runner import run as run_module
from seqedit.runner.config import CheckpointSpec, RunConfig
from seqedit.runner.measure import Measurements
from seqedit.runner.requests import select_requests
from seqedit.runner.run import SequentialRun, run_experiment
from seqedit.runner.store import SNAPSHOT_EVERY, RunStore

MB = 1e6


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _load_config(store: RunStore) -> dict[str, Any]:
    from seqedit.runner.config import load_config

    return load_config(store.config_path).model_dump(mode="json")


def _config(args: argparse.Namespace, output_dir: Path) -> RunConfig:
    return RunConfig.model_validate({
        "model": args.model, "method": args.method, "dataset": {"name": args.dataset},
        "num_edits": args.edits, "batch_size": args.batch_size, "checkpoints": {"every": args.edits, "log_spaced": False},
        "evaluation": {"edit_metrics": False, "perplexity": False, "downstream_tasks": [], "activations": True},
        "output_dir": str(output_dir),
    })


def _model(name: str) -> LoadedModel:
    """The named model; ``tiny-<family>`` builds a small random one (a quick check of this script)."""
    if name.startswith("tiny-"):
        return build_tiny_model(name.removeprefix("tiny-"), num_layers=4, hidden=48, seed=3)
    return load(name, dtype="float32", device="cpu")


def measure_sizes(store: RunStore, steps: int) -> dict[str, Any]:
    root = store.root
    ledger = [store.ledger_path(s) for s in range(1, steps + 1)]
    dense_ledger = [sum(t.numel() * t.element_size() for t in store.load_ledger(s).deltas.values())
                    for s in range(1, steps + 1)]
    full_state = 0
    for name in ("editor", "monitor"):
        tensors, _ = store.load_state(name, steps)
        full_state += sum(t.numel() * t.element_size() for t in tensors.values())
    # The norm monitor's float64 Σ Δ, which a run with a ledger records by checksum only (rebuilt on resume)
    # and the earlier format stored: one float64 copy of each edited matrix.
    edited = {name: t.numel() for s in range(1, steps + 1) for name, t in store.load_ledger(s).deltas.items()}
    cumulative_bytes = 8 * sum(edited.values())
    written_last_step = sum(_size(p) for p in store.state_dir.glob(f"*_step_{steps:06d}.*"))
    tables = sum(_size(p) for p in root.glob("*.jsonl")) + sum(_size(p) for p in root.glob("*.parquet"))
    # checkpoint rows come at checkpoints, the other tables' rows every step
    checkpoint_tables = sum(_size(p) for p in root.glob("checkpoints.*"))
    checkpoints = len({row["step"] for row in store.read("checkpoints")})
    return {
        "total_bytes": _size(root),
        "ledger_bytes_per_step": sum(_size(p) for p in ledger) / steps,
        "dense_ledger_bytes_per_step": sum(dense_ledger) / steps,
        "state_bytes_on_disk": _size(store.state_dir),
        "state_bytes_full": full_state,
        "cumulative_bytes_not_stored": cumulative_bytes,
        "state_bytes_written_last_step": written_last_step,
        "snapshot_bytes": _size(store.snapshot_dir),
        "table_bytes": tables,
        "table_bytes_per_step": (tables - checkpoint_tables) / (steps + 1),
        "checkpoint_table_bytes_per_checkpoint": checkpoint_tables / max(checkpoints, 1),
    }


def time_restore(store: RunStore, config: RunConfig, steps: int) -> dict[str, Any]:
    """The resume's restore at the run's end, measured whole on a fresh base model (state, activation
    baselines measured again, newest snapshot, ledger steps after it); then each ledger step's load + replay
    alone, and a dense ledger step's, for the extrapolation."""
    lm = _model(config.model)
    selection = select_requests(config)
    editor = create_editor(config.method, lm, config.hparams)
    measurements = Measurements(lm, config, selection.edits, selection.probes)
    started, cpu_started = time.perf_counter(), time.process_time()
    SequentialRun(config, lm=lm, show_progress=False, log=lambda m: None)._restore(lm, editor, measurements, steps)
    snapshot_step = store.latest_snapshot(steps)
    timings: dict[str, Any] = {"restore_at_end_s": time.perf_counter() - started,
                               "restore_at_end_cpu_s": time.process_time() - cpu_started, "snapshot_step": snapshot_step,
                               "replayed_at_end": steps - (snapshot_step or 0)}
    with tempfile.TemporaryDirectory() as tmp:  # a snapshot's load, whether or not the run wrote one
        edited = sorted({name for step in range(1, steps + 1) for name in store.load_ledger(step).deltas})
        params = dict(lm.model.named_parameters(remove_duplicate=False))
        probe = RunStore(tmp)
        probe.save_snapshot(1, {name: params[name].detach() for name in edited})
        started = time.perf_counter()
        with torch.no_grad():
            for name, value in probe.load_snapshot(1).items():
                params[name].copy_(value)
        timings["snapshot_load_s"] = time.perf_counter() - started
        timings["snapshot_bytes"] = _size(probe.snapshot_dir)
    replay = []
    replay_cpu = []
    for step in range(1, steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        store.load_ledger(step).replay(lm.model)
        replay.append(time.perf_counter() - started)
        replay_cpu.append(time.process_time() - cpu_started)
    timings["replay_step_s"] = replay
    timings["replay_step_cpu_s"] = replay_cpu
    with tempfile.TemporaryDirectory() as tmp:  # the earlier format: one dense file per step
        dense = Path(tmp) / "dense.safetensors"
        EditResult("dense", store.load_ledger(1).deltas).save(dense, compact=False)
        started = time.perf_counter()
        EditResult.load(dense).replay(lm.model)
        timings["dense_replay_step_s"] = time.perf_counter() - started
    return timings


def extrapolate(sizes: dict[str, Any], timings: dict[str, Any], edits: int, batch: int, every: int) -> dict[str, Any]:
    steps = edits // batch
    # the study's checkpoints (every 100 edits and log-spaced), and the unedited model's at step 0
    checkpoints = 1 + len(CheckpointSpec(every=100, log_spaced=True).edit_counts(edits, batch))
    tables = sizes["table_bytes_per_step"] * (steps + 1) + sizes["checkpoint_table_bytes_per_checkpoint"] * checkpoints
    per_step_replay = sum(timings["replay_step_s"]) / len(timings["replay_step_s"])
    after_snapshot = steps % every
    # The measured restore less its ledger reads (all of the run's steps: the monitor's Σ Δ is summed again)
    # and its snapshot load: state, activation baselines, setup.
    fixed = timings["restore_at_end_s"] - len(timings["replay_step_s"]) * per_step_replay
    fixed -= timings["snapshot_load_s"] if timings["snapshot_step"] else 0.0
    fixed = max(fixed, 0.0)
    snapshot_bytes = sizes["snapshot_bytes"] or timings["snapshot_bytes"]
    return {
        "edits": edits,
        "steps": steps,
        "checkpoints": checkpoints,
        "table_bytes": tables,
        "disk_bytes": sizes["ledger_bytes_per_step"] * steps + tables
        + sizes["state_bytes_on_disk"] + snapshot_bytes,
        "disk_bytes_dense_format": sizes["dense_ledger_bytes_per_step"] * steps
        + tables + sizes["state_bytes_full"]
        + sizes["cumulative_bytes_not_stored"],
        "restore_fixed_s": fixed,
        # every ledger step is read (the monitor's Σ Δ is summed again), the ones after the snapshot replayed
        "restore_s": fixed + timings["snapshot_load_s"] + steps * per_step_replay,
        "restore_s_worst": fixed + timings["snapshot_load_s"] + steps * max(timings["replay_step_s"]),
        "restore_s_dense_format": fixed + steps * timings["dense_replay_step_s"],
        "replayed_steps": after_snapshot,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="memit")
    parser.add_argument("--dataset", default="counterfact")
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--snapshot-every", type=int, default=0,
                        help=f"steps between weight snapshots (0: {SNAPSHOT_EVERY}, or the run's length if shorter, "
                             "so the measured directory holds one)")
    parser.add_argument("--at-edits", type=int, default=900, help="also extrapolate the restore to this point")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary directory, removed after")
    parser.add_argument("--existing", type=Path, default=None,
                        help="measure this run directory (up to its last completed step) instead of running one; "
                             "it is only read")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/run_dir_size.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.existing is not None:
        store = RunStore(args.existing)
        steps = int(store.read_progress()["completed_steps"])
        config = RunConfig.model_validate({**json.loads(json.dumps(_load_config(store))), "output_dir": str(args.existing)})
        args.edits, args.batch_size, args.method, args.model = steps * config.batch_size, config.batch_size, \
            config.method, config.model
        wall: float | None = None
        sizes = measure_sizes(store, steps)
        timings = time_restore(store, config, steps)
    else:
        steps = args.edits // args.batch_size
        run_module.SNAPSHOT_EVERY = args.snapshot_every or min(SNAPSHOT_EVERY, steps)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = args.run_dir or Path(tmp) / "run"
            config = _config(args, run_dir)
            started = time.perf_counter()
            outcome = run_experiment(config, lm=_model(args.model), show_progress=False)
            wall = time.perf_counter() - started
            if outcome.status != "finished":
                raise SystemExit(f"the run ended {outcome.status}: {outcome.message}")
            store = RunStore(run_dir)
            sizes = measure_sizes(store, steps)
            timings = time_restore(store, config, steps)
    production_every = args.snapshot_every or SNAPSHOT_EVERY
    per_1000 = extrapolate(sizes, timings, 1000, args.batch_size, production_every)
    at_point = extrapolate(sizes, timings, args.at_edits, args.batch_size, production_every)
    report = {
        **provenance(args),
        "run_environment": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "niceness": os.nice(0), "load_average": os.getloadavg()},
        "run": {"edits": args.edits, "steps": steps, "wall_s": wall, "snapshot_every_in_run": run_module.SNAPSHOT_EVERY,
                "existing": str(args.existing) if args.existing else None,
                "snapshot_every": production_every},
        "measured": sizes,
        "restore_timings": timings,
        "extrapolated_1000_edits": per_1000,
        f"extrapolated_resume_at_{args.at_edits}_edits": at_point,
        "note": f"measured on {args.edits} edits and extrapolated: ledger and tables grow per step, checkpoint rows "
                "per checkpoint (the study's schedule), state and the newest snapshot are one copy each; timings on "
                "a shared CPU (see load_average)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{args.method} on {args.model}: {args.edits} edits in batches of {args.batch_size}"
          + (f" ({wall:.0f} s)" if wall is not None else f", measured from {args.existing}"))
    print(f"{'part':34} {'this format':>14} {'dense format':>14}")
    dense_state = sizes["state_bytes_full"] + sizes["cumulative_bytes_not_stored"]
    rows = [
        ("ledger per step (MB)", sizes["ledger_bytes_per_step"], sizes["dense_ledger_bytes_per_step"]),
        ("state on disk (MB)", sizes["state_bytes_on_disk"], dense_state),
        ("state written per step (MB)", sizes["state_bytes_written_last_step"], dense_state),
        ("weight snapshot (MB)", sizes["snapshot_bytes"], 0),
        ("tables per step (MB)", sizes["table_bytes_per_step"], sizes["table_bytes_per_step"]),
        ("checkpoint rows per checkpoint (MB)", sizes["checkpoint_table_bytes_per_checkpoint"],
         sizes["checkpoint_table_bytes_per_checkpoint"]),
        ("disk per 1,000 edits (MB, extrap.)", per_1000["disk_bytes"], per_1000["disk_bytes_dense_format"]),
    ]
    for label, new, old in rows:
        print(f"{label:34} {new / MB:14.2f} {old / MB:14.2f}")
    print(f"{'restore at ' + str(args.at_edits) + ' edits (s, extrap.)':34} {at_point['restore_s']:14.2f} "
          f"{at_point['restore_s_dense_format']:14.2f}")
    print(f"{'restore, worst case (s, extrap.)':34} {at_point['restore_s_worst']:14.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
