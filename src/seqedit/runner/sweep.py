"""Sweeps: one base config, a grid of overrides, one run directory per combination.

Runs go one after another on this machine (``backend="local"``) or as Ray tasks on a cluster
(``backend="ray"``, needs ``pip install seqedit[ray]``; connect with ``RAY_ADDRESS`` or ``ray_address``).
Each run is an ordinary run directory, so a sweep interrupted anywhere is resumed run by run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from seqedit.runner.config import ConfigError, RunConfig, apply_overrides
from seqedit.runner.store import RunStore

Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class SweepPoint:
    label: str
    config: RunConfig


def parse_grid(entries: Sequence[str]) -> dict[str, list[Any]]:
    """``["method=memit,encore", "batch_size=[10, 100]"]`` -> {"method": [...], "batch_size": [...]}."""
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        if "=" not in entry:
            raise ConfigError(f"grid entry {entry!r} must look like key=value1,value2")
        key, _, raw = entry.partition("=")
        raw = raw.strip()
        values = yaml.safe_load(raw) if raw.startswith("[") else [yaml.safe_load(v) for v in raw.split(",")]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid entry {entry!r} has no values")
        grid[key.strip()] = values
    return grid


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def expand(base: RunConfig, grid: dict[str, list[Any]], out_root: str | Path) -> list[SweepPoint]:
    """Every combination of the grid applied to ``base``; run directories under ``out_root``."""
    keys = list(grid)
    points: list[SweepPoint] = []
    base_data = base.model_dump(mode="json")
    for values in itertools.product(*(grid[k] for k in keys)):
        label = "_".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in zip(keys, values, strict=True)) or "base"
        overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in zip(keys, values, strict=True)]
        data = apply_overrides(base_data, overrides)
        data["output_dir"] = str(Path(out_root) / label)
        data["name"] = label
        points.append(SweepPoint(label, RunConfig.model_validate(data)))
    return points


def _run_point(config_data: dict[str, Any], threads: int = 0) -> dict[str, Any]:
    from seqedit.runner.run import run_experiment
    from seqedit.runner.store import set_threads

    set_threads(threads)  # in the Ray worker too
    config = RunConfig.model_validate(config_data)
    resume = RunStore(config.output_dir).exists()
    outcome = run_experiment(config, resume=resume, show_progress=False)
    return {"run_dir": str(outcome.run_dir), "status": outcome.status, "n_edits": outcome.n_edits,
            "message": outcome.message}


def run_sweep(
    points: Sequence[SweepPoint],
    *,
    backend: Backend = "local",
    ray_address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    threads: int = 0,
) -> list[dict[str, Any]]:
    """Run (or resume) every point; returns one outcome dict per point, in order. ``threads``: torch CPU
    threads of each run (0: torch's default)."""
    payloads = [p.config.model_dump(mode="json") for p in points]
    if backend == "local":
        return [_run_point(p, threads) for p in payloads]
    if backend != "ray":
        raise ValueError(f"unknown backend {backend!r}; choose 'local' or 'ray'")
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray backend needs Ray: pip install 'seqedit[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(_run_point)
    return list(ray.get([remote.remote(p, threads) for p in payloads]))
