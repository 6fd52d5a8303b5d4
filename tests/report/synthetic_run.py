"""Synthetic run directories in the runner's format (seqedit.rundir, current schema version), for the tests
of the report layer.

The numbers follow the shapes reported for sequential editing (norms of edited matrices growing with the
number of edits, retention and downstream scores decaying, activations drifting in and after the edited
layers) but are generated, not measured: ``environment.json`` says ``"synthetic": true`` and every report
of such a run carries a banner saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from seqedit import rundir
from seqedit.utils.io import atomic_path, write_json_atomic, write_text_atomic

Schedule = Literal["log", "linear"]

EDIT_DEFINITIONS: Mapping[str, str] = {
    "efficacy_score": "prob_compare:new>true",
    "paraphrase_score": "prob_compare:new>true",
    "neighborhood_score": "prob_compare:true>new",
    "score": "harmonic_mean:efficacy,paraphrase,neighborhood",
    "efficacy_magnitude": "prob_diff:p(new)-p(true)",
    "paraphrase_magnitude": "prob_diff:p(new)-p(true)",
    "neighborhood_magnitude": "prob_diff:p(true)-p(new)",
    "efficacy_top1": "argmax:all_target_tokens",
    "paraphrase_top1": "argmax:all_target_tokens",
    "fluency_entropy": "ngram_entropy:2,3-gram weighted",
}
DOWNSTREAM_TASKS: Mapping[str, Mapping[str, float]] = {
    "sst2": {"accuracy": 0.74},
    "mrpc": {"accuracy": 0.63, "f1": 0.76},
    "rte": {"accuracy": 0.56},
    "cola": {"mcc": 0.11},
}
# Chance level each downstream metric decays towards.
_CHANCE = {"accuracy": 0.5, "f1": 0.5, "mcc": 0.0}


def checkpoint_steps(n_steps: int, schedule: Schedule, every: int = 2) -> list[int]:
    """Steps at which checkpoints are measured: 0, then doubling (log) or every ``every`` steps, and the end."""
    if schedule == "log":
        steps = [0] + [2**i for i in range(int(math.log2(max(n_steps, 1))) + 1)]
    else:
        steps = list(range(0, n_steps + 1, every))
    return sorted({s for s in steps if s <= n_steps} | {n_steps})


def write_synthetic_edit_run(
    run_dir: str | Path,
    *,
    method: str = "memit",
    n_steps: int = 20,
    batch_size: int = 5,
    num_layers: int = 12,
    edited_layers: Sequence[int] = (3, 4, 5, 6, 7),
    growth: float = 1.0,
    schedule: Schedule = "log",
    measure_activations: bool = True,
    parquet: bool = True,
    seed: int = 0,
) -> Path:
    """Write a finished edit run of ``n_steps`` batches of ``batch_size`` edits; return its directory.

    ``growth`` scales how fast the norms grow and how fast the scores decay (MEMIT-like 1.0, a regularised
    method well below 1).
    """
    path = Path(run_dir)
    rng = np.random.default_rng(seed)
    total = n_steps * batch_size
    fro0 = {(layer, kind): _base_norm(layer, kind, rng) for layer in range(num_layers) for kind in _KINDS}
    tracked = sorted(set(edited_layers) | {min(edited_layers) - 1, max(edited_layers) + 1})
    tracked = [layer for layer in tracked if 0 <= layer < num_layers]
    ckpt_steps = checkpoint_steps(n_steps, schedule)

    norms = _edit_norm_rows(n_steps, batch_size, total, tracked, edited_layers, fro0, growth, rng)
    checkpoints: list[dict[str, Any]] = []
    for step in ckpt_steps:
        n = step * batch_size
        frac = n / total
        checkpoints += _edit_score_rows(step, n, frac, growth, rng)
        checkpoints += _downstream_rows(step, n, frac, growth, rng)
        checkpoints += _profile_rows(step, n, num_layers, edited_layers, fro0, norms)
        if measure_activations:
            checkpoints += _activation_rows(step, n, frac, num_layers, edited_layers, growth, rng)
    timings = _edit_timing_rows(method, n_steps, batch_size, rng)
    requests = _request_rows(n_steps, batch_size, growth, rng)

    config = {  # the fields of seqedit.runner.config.RunConfig that the report reads
        "name": f"synthetic-{method}",
        "model": "smollm2-135m",
        "dtype": "float32",
        "device": "cpu",
        "method": method,
        "hparams": {"layers": list(edited_layers)},
        "dataset": {"name": "counterfact", "offset": 0},
        "num_edits": total,
        "batch_size": batch_size,
        "checkpoints": {"at": [s * batch_size for s in ckpt_steps], "log_spaced": schedule == "log"},
        "seed": seed,
    }
    _write_common(path, config, kind=rundir.KIND_EDIT, completed_steps=n_steps, n_edits=total)
    _write_table(path, rundir.NORMS, norms, parquet)
    _write_table(path, rundir.CHECKPOINTS, checkpoints, parquet)
    _write_table(path, rundir.TIMINGS, timings, parquet)
    _write_table(path, rundir.REQUESTS, requests, parquet)
    last_growth = [r["fro_rel"] for r in norms if r["step"] == n_steps and r["edited"]]
    write_json_atomic(
        path / rundir.SUMMARY,
        {
            "kind": "edit",
            "n_edits": total,
            "steps": n_steps,
            "wall_time_s": round(sum(r["total_s"] for r in timings), 3),
            "edited_norm_growth_max": round(max(last_growth), 4),
        },
    )
    return path


def write_synthetic_intervention_run(
    run_dir: str | Path,
    *,
    kind: str = "continued-pretraining",
    n_steps: int = 120,
    num_layers: int = 12,
    trained_layers: Sequence[int] = (3, 4, 5, 6, 7),
    checkpoint_every: int = 30,
    parquet: bool = True,
    seed: int = 0,
) -> Path:
    """Write a finished post-training intervention run (training steps, ``group="train"`` loss rows)."""
    path = Path(run_dir)
    rng = np.random.default_rng(seed)
    fro0 = {(layer, kind): _base_norm(layer, kind, rng) for layer in range(num_layers) for kind in _KINDS}
    norms = _intervention_norm_rows(n_steps, trained_layers, fro0, rng)
    checkpoints: list[dict[str, Any]] = []
    for step in range(n_steps + 1):
        loss = 2.1 + 1.4 * math.exp(-step / 25) + 0.08 * rng.standard_normal()
        checkpoints.append(_ckpt(step, 0, "train", "loss", loss, "wikitext-2:train", None, "token_mean_nll"))
    for step in checkpoint_steps(n_steps, "linear", every=checkpoint_every):
        frac = step / n_steps
        # Training on text repairs some downstream damage: decays are negative here.
        checkpoints += _downstream_rows(step, 0, frac, -0.3, rng)
        checkpoints += _profile_rows(step, 0, num_layers, trained_layers, fro0, norms)
    timings = [
        _timing_row(step, 0, 0, {"forward": 0.21, "backward": 0.43, "optimizer": 0.05}, rng)
        for step in range(1, n_steps + 1)
    ]
    config = {  # the fields of seqedit.intervene.config.InterventionConfig that the report reads
        "kind": kind,
        "model": "smollm2-135m",
        "dtype": "float32",
        "data": "wikitext2",
        "steps": n_steps,
        "lr": 1e-5,
        "batch_size": 8,
        "lora_layers": list(trained_layers),
        "seed": seed,
    }
    _write_common(path, config, kind=rundir.KIND_INTERVENTION, completed_steps=n_steps, n_edits=0)
    _write_table(path, rundir.NORMS, norms, parquet)
    _write_table(path, rundir.CHECKPOINTS, checkpoints, parquet)
    _write_table(path, rundir.TIMINGS, timings, parquet)
    write_json_atomic(path / rundir.SUMMARY, {"kind": kind, "steps": n_steps})
    return path


# ----------------------------------------------------------------------------------------------- writing


def _write_common(path: Path, config: dict[str, Any], *, kind: str, completed_steps: int, n_edits: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / rundir.CONFIG, yaml.safe_dump(config, sort_keys=False))
    write_json_atomic(
        path / rundir.ENVIRONMENT,
        {
            "synthetic": True,  # the report's banner
            "generator": "tests/report/synthetic_run.py",
            "seqedit": "0.1.0",
            "torch_device": "cpu",
            "torch_dtype": "float32",
            "host": "synthetic",
            "start_time": "2025-01-01T00:00:00+00:00",
        },
    )
    write_json_atomic(
        path / rundir.PROGRESS,
        {
            "kind": kind,
            "status": "finished",
            "completed_steps": completed_steps,
            "n_edits": n_edits,
            "message": "",
            rundir.VERSION_FIELD: rundir.SCHEMA_VERSION,
        },
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_table(path: Path, stem: str, rows: Iterable[Mapping[str, Any]], parquet: bool) -> None:
    rows = [{k: _clean(v) for k, v in row.items()} for row in rows]
    write_text_atomic(path / rundir.jsonl(stem), "".join(json.dumps(row) + "\n" for row in rows))
    if parquet:
        with atomic_path(path / rundir.parquet(stem)) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)


# ----------------------------------------------------------------------------------------------- rows

_KINDS = ("mlp_out", "attn_out")


def _matrix_path(layer: int, kind: str) -> str:
    return f"model.layers.{layer}.mlp.down_proj" if kind == "mlp_out" else f"model.layers.{layer}.self_attn.o_proj"


def _base_norm(layer: int, kind: str, rng: np.random.Generator) -> float:
    base = 38.0 if kind == "mlp_out" else 24.0
    return base + 0.6 * layer + 1.5 * float(rng.standard_normal())


def _dist_from_init(n_edits: float, layer: int, growth: float) -> float:
    # Norm of the accumulated update: slightly superlinear in the number of edits, larger in early layers.
    return growth * max(0.05, 0.15 + 0.03 * (8 - layer)) * n_edits**1.1


def _norm_row(step: int, n: int, layer: int, kind: str, edited: bool, fro0: float, dist: float, prev: float) -> dict:
    fro = math.sqrt(fro0**2 + dist**2 + 0.1 * fro0 * dist)
    return {
        "step": step,
        "n_edits": n,
        "matrix": _matrix_path(layer, kind),
        "layer": layer,
        "kind": kind,
        "edited": edited,
        "fro": fro,
        "fro0": fro0,
        "fro_rel": fro / fro0,
        "dist_from_init": dist,
        # Successive updates are not aligned, so one step's update is longer than the change in distance.
        "step_delta_fro": 1.4 * (dist - prev) if step > 0 else 0.0,
        "spectral": 0.21 * fro0 + 0.8 * dist if step % 5 == 0 else float("nan"),
    }


def _edit_norm_rows(
    n_steps: int,
    batch_size: int,
    total: int,
    tracked: Sequence[int],
    edited_layers: Sequence[int],
    fro0: Mapping[tuple[int, str], float],
    growth: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    rows = []
    for layer in tracked:
        edited = layer in edited_layers
        prev = 0.0
        for step in range(n_steps + 1):
            n = step * batch_size
            increment = _dist_from_init(n, layer, growth) - _dist_from_init(max(n - batch_size, 0), layer, growth)
            dist = prev + increment * float(rng.lognormal(0, 0.1)) if edited else 0.0
            rows.append(_norm_row(step, n, layer, "mlp_out", edited, fro0[(layer, "mlp_out")], dist, prev))
            prev = dist
    return rows


def _intervention_norm_rows(
    n_steps: int, trained_layers: Sequence[int], fro0: Mapping[tuple[int, str], float], rng: np.random.Generator
) -> list[dict[str, Any]]:
    rows = []
    for layer in trained_layers:
        prev = 0.0
        for step in range(n_steps + 1):
            dist = 0.9 * math.sqrt(step) * (1 + 0.03 * float(rng.standard_normal()))
            dist = max(dist, prev)
            row = _norm_row(step, 0, layer, "mlp_out", True, fro0[(layer, "mlp_out")], dist, prev)
            # Weight decay shrinks the matrices a little while they drift.
            shrink = (0.03 + 0.004 * (layer - min(trained_layers))) * (1 - math.exp(-step / 40))
            row["fro"] = fro0[(layer, "mlp_out")] * (1 - shrink) + 0.02 * dist
            row["fro_rel"] = row["fro"] / row["fro0"]
            row["spectral"] = 0.21 * row["fro"] if step % 5 == 0 else None
            rows.append(row)
            prev = dist
    return rows


def _ckpt(
    step: int, n: int, group: str, name: str, value: float, scope: str, layer: int | None, definition: str
) -> dict[str, Any]:
    return {
        "step": step,
        "n_edits": n,
        "group": group,
        "name": name,
        "value": float(value),
        "scope": scope,
        "layer": layer,
        "definition": definition,
    }


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _edit_score_rows(step: int, n: int, frac: float, growth: float, rng: np.random.Generator) -> list[dict]:
    if step == 0:
        return []
    rows = []
    for scope, decay in (("latest", 0.15), ("all", 0.6)):
        noise = 0.015 * rng.standard_normal(3)
        efficacy = _clip01(0.99 - growth * decay * frac**1.5 + noise[0])
        paraphrase = _clip01(0.86 - growth * decay * 0.9 * frac + noise[1])
        neighborhood = _clip01(0.76 - growth * 0.22 * frac + noise[2])
        scores = (efficacy, paraphrase, neighborhood)
        harmonic = 3 / sum(1 / max(s, 1e-6) for s in scores)
        values = {
            "efficacy_score": efficacy,
            "paraphrase_score": paraphrase,
            "neighborhood_score": neighborhood,
            "score": harmonic,
            "efficacy_magnitude": 0.7 * efficacy - 0.2,
            "paraphrase_magnitude": 0.55 * paraphrase - 0.2,
            "neighborhood_magnitude": 0.3 * neighborhood - 0.1,
            "efficacy_top1": 0.9 * efficacy,
            "paraphrase_top1": 0.8 * paraphrase,
        }
        rows += [_ckpt(step, n, "edit", k, v, scope, None, EDIT_DEFINITIONS[k]) for k, v in values.items()]
    fluency = 6.2 - 0.9 * growth * frac**2 + 0.02 * float(rng.standard_normal())
    rows.append(_ckpt(step, n, "edit", "fluency_entropy", fluency, "sample", None, EDIT_DEFINITIONS["fluency_entropy"]))
    return rows


def _downstream_rows(step: int, n: int, frac: float, growth: float, rng: np.random.Generator) -> list[dict]:
    damage = 1 - math.exp(-2.0 * growth * frac) if growth >= 0 else -0.3 * (1 - math.exp(2.0 * growth * frac))
    rows = []
    for task, metrics in DOWNSTREAM_TASKS.items():
        for metric, baseline in metrics.items():
            chance = _CHANCE[metric]
            value = baseline - (baseline - chance) * damage + (0.01 * float(rng.standard_normal()) if step else 0)
            rows.append(_ckpt(step, n, "downstream", f"{task}_{metric}", value, task, None, f"{metric}:zero-shot"))
    perplexity = 18.5 * math.exp(1.6 * growth * frac**1.5)
    rows.append(_ckpt(step, n, "downstream", "perplexity", perplexity, "wikitext-2", None, "token_mean:stride=512"))
    return rows


def _profile_rows(
    step: int,
    n: int,
    num_layers: int,
    edited_layers: Sequence[int],
    fro0: Mapping[tuple[int, str], float],
    norms: Sequence[Mapping[str, Any]],
) -> list[dict]:
    current = {(r["layer"], r["kind"]): r["fro"] for r in norms if r["step"] == step}
    rows = []
    for kind in _KINDS:
        for layer in range(num_layers):
            value = current.get((layer, kind), fro0[(layer, kind)])
            rows.append(_ckpt(step, n, "profile", "fro", value, kind, layer, "frobenius"))
    return rows


def _activation_rows(
    step: int,
    n: int,
    frac: float,
    num_layers: int,
    edited_layers: Sequence[int],
    growth: float,
    rng: np.random.Generator,
) -> list[dict]:
    first = min(edited_layers)
    rows = []
    for layer in range(num_layers):
        at_edit = 1.0 if layer in edited_layers else 0.0
        # Drift appears at the first edited layer and is carried down the residual stream.
        downstream = 1 / (1 + math.exp(-(layer - first - 0.5)))
        drift = growth * frac * (0.6 * at_edit + 0.4 * downstream) * (1 + 0.03 * float(rng.standard_normal()))
        values = {
            ("mlp_out_norm_rel", "mlp_out"): 1 + 2.5 * drift * (1 if at_edit else 0.2),
            ("residual_norm_rel", "residual"): 1 + 0.8 * drift,
            ("principal_angle_mean_deg", "residual"): 35 * drift,
            ("principal_angle_max_deg", "residual"): min(90.0, 70 * drift),
            ("cka", "residual"): 1 - 0.35 * drift,
            ("cosine", "residual"): 1 - 0.25 * drift,
            ("attn_share", "residual"): 0.45 - 0.15 * drift * downstream,
            ("mlp_share", "residual"): 0.55 + 0.15 * drift * downstream,
        }
        definitions = {
            "mlp_out_norm_rel": "mean_token_l2/step0",
            "residual_norm_rel": "mean_token_l2/step0",
            "principal_angle_mean_deg": "top16_pcs_vs_step0",
            "principal_angle_max_deg": "top16_pcs_vs_step0",
            "cka": "linear_cka_vs_step0",
            "cosine": "mean_token_cosine_vs_step0",
            "attn_share": "update_norm_share",
            "mlp_share": "update_norm_share",
        }
        rows += [
            _ckpt(step, n, "activation", name, value, scope, layer, definitions[name])
            for (name, scope), value in values.items()
        ]
    return rows


_PHASES: Mapping[str, Mapping[str, float]] = {
    "memit": {"compute_targets": 0.9, "solve": 0.12, "commit": 0.01},
    "alphaedit": {"compute_targets": 0.9, "project": 0.2, "solve": 0.14, "commit": 0.01},
    "emmet": {"compute_targets": 0.9, "solve": 0.3, "commit": 0.01},
    "encore": {"compute_targets": 0.6, "solve": 0.15, "commit": 0.01},
    "ft": {"train": 1.6, "commit": 0.01},
    "mend": {"hypernetwork": 0.15, "commit": 0.01},
}


def _timing_row(
    step: int, n: int, edits: int, per_unit: Mapping[str, float], rng: np.random.Generator, units: int = 1
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "n_edits": n, "edits_in_step": edits}
    total = 0.0
    for phase, seconds in per_unit.items():
        value = seconds * units * float(rng.lognormal(0, 0.08))
        row[f"phase_{phase}_s"] = value
        total += value
    row["total_s"] = total * 1.03
    return row


def _edit_timing_rows(method: str, n_steps: int, batch_size: int, rng: np.random.Generator) -> list[dict]:
    per_edit = _PHASES.get(method, _PHASES["memit"])
    rows = []
    for step in range(1, n_steps + 1):
        row = _timing_row(step, step * batch_size, batch_size, per_edit, rng, units=batch_size)
        if method in ("memit", "alphaedit", "emmet", "encore"):
            # The key covariance is collected once, in the first step.
            row["phase_covariance_s"] = 42.0 if step == 1 else None
            row["total_s"] += 42.0 if step == 1 else 0.0
        rows.append(row)
    return rows


def _request_rows(n_steps: int, batch_size: int, growth: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    for step in range(1, n_steps + 1):
        for i in range(batch_size):
            case = (step - 1) * batch_size + i
            rows.append(
                {
                    "step": step,
                    "case_id": case,
                    "init_norm": 18 + 0.05 * growth * case + float(rng.normal(0, 0.8)),
                    "target_norm": 6 + 0.3 * float(rng.normal(0, 1)) + 0.02 * growth * case,
                    "steps": int(rng.integers(8, 26)),
                    "final_prob": float(np.clip(0.97 - 0.002 * growth * case + rng.normal(0, 0.02), 0, 1)),
                }
            )
    return rows
