"""The seed paper's findings (Gupta et al. 2025, claims C1-C5) and the norm-feedback question, read from
run directories (or their compact copies): numbers, figures and a verdict per claim, with the rule that
produced it. Nothing here runs a model; every number comes from the runs' tables.

Verdict rules (stated on the page as well):
* **C1** (post-training grows norms): per intervention run, the mean ‖W‖/‖W₀‖ − 1 of the trained matrices
  at the last step and the share of them that grew. Shown when every run without weight decay grew most
  of its trained matrices and all three kinds were run (else at most partly shown).
* **C2** (every editor grows the edited matrices with every edit): per editing run, the growth of the mean
  ‖W‖ of the edited matrices and the share of batches after which it rose. Shown when every run grew and
  rose after at least 90% of its batches and every family (C2_METHODS) was run; partly shown when every
  run grew.
* **C3** (imbalance, degradation, collapse): the first edit count meeting each collapse criterion, and the
  change of perplexity and downstream accuracy against their noise (binomial standard error of an
  accuracy; perplexity has none here, so a rise of 10% is taken as real). Shown when a run collapsed;
  partly shown when some measure degraded beyond its noise; otherwise not shown.
* **C4** (activation norms fall, activations leave the unedited subspaces): at the last checkpoint, per
  layer, the residual-stream norm ratio against its two-halves noise floor, and the principal angle
  against its floor. Each half of the claim is judged alone; the verdict combines them.
* **C5** (ENCORE slows it): ENCORE against MEMIT at the largest edit count both reached: norm growth,
  distance from W₀, perplexity rise, hidden-state angle. Shown when all four are smaller under ENCORE.
* **Feedback loop** (NAS, Liu et al. 2026): ‖W − W₀‖ against edits fitted by a·√n, a·n and a·(e^{bn} − 1)
  (least squares; R² of each), the log-log slope, and whether the per-request ‖δ‖ grows with ‖W‖.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from seqedit import rundir
from seqedit.report.loading import RunData, load_run
from seqedit.report.style import new_figure, series_colors, styled
from seqedit.runner.health import HealthMonitor, HealthSpec
from seqedit.utils.io import strict_json

REAL_PERPLEXITY_RISE = 0.10  # a rise of perplexity taken as a degradation
C2_RISING_SHARE = 0.9
DRIFT_OVER_FLOOR = 3.0  # a drift statistic this many times its noise floor counts as a real move
SITE = "block"  # activations of the residual stream after each block
# What "every editor family" and "every intervention" mean for C2 and C1: a verdict over fewer is partial.
C2_METHODS = ("ft-l", "lora", "mend", "rome", "memit", "emmet", "alphaedit")
C1_KINDS = ("continued-pretraining", "finetune", "lora")


# ---------------------------------------------------------------------------------------------- numbers
@dataclass
class RunFindings:
    """The numbers of one run that the claims use."""

    name: str
    method: str
    kind: str
    size: int  # edits (editing runs) or steps (interventions) completed
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)


def _method(run: RunData) -> str:
    if run.kind == "intervention":
        return f"{run.config.get('kind', 'intervention')} (weight decay {run.config.get('weight_decay', 0)})"
    return str(run.config.get("method") or run.meta.method or run.meta.name)


def _edited_norms(run: RunData) -> pd.DataFrame:
    """Rows of the matrices the run changed (edited or trained), per step."""
    norms = run.norms
    if "edited" in norms and norms["edited"].notna().any():
        names = set(norms.loc[norms["edited"].astype(bool), "matrix"])
    else:
        names = set(norms.loc[norms["dist_from_init"].fillna(0) > 0, "matrix"])
    return norms[norms["matrix"].isin(names)]


def norm_curve(run: RunData) -> pd.DataFrame:
    """Per step: x (edits or steps), mean and max ‖W‖/‖W₀‖, mean ‖W − W₀‖ and mean ‖W‖ of the changed matrices."""
    rows = _edited_norms(run)
    if rows.empty:
        return pd.DataFrame(columns=["x", "fro_rel_mean", "fro_rel_max", "dist_mean", "fro_mean"])
    grouped = rows.groupby("step")
    curve = pd.DataFrame({
        "x": grouped[run.x_column].first(),
        "fro_rel_mean": grouped["fro_rel"].mean(),
        "fro_rel_max": grouped["fro_rel"].max(),
        "dist_mean": grouped["dist_from_init"].mean(),
        "fro_mean": grouped["fro"].mean(),
    }).reset_index()
    return curve.sort_values("step")


def _checkpoint_series(run: RunData, group: str, name: str, scope: str | None = None) -> pd.Series:
    rows = run.group(group)
    rows = rows[rows["name"] == name]
    if scope is not None:
        rows = rows[rows["scope"] == scope]
    return rows.groupby("n_edits")["value"].mean().sort_index() if not rows.empty else pd.Series(dtype=float)


def retention_scope(run: RunData) -> str | None:
    """The scope of edit metrics on earlier edits ('fixed', 'sample' or 'all'), as the run recorded it."""
    scopes = set(run.group("edit")["scope"].dropna())
    return next((s for s in ("fixed", "sample", "all") if s in scopes), None)


def collapse_points(run: RunData) -> dict[str, dict[str, Any] | None]:
    """The first step meeting each collapse criterion, as the runner's health monitor decides it (the run's
    own ``health`` settings, else the defaults), replayed over the recorded rows."""
    spec = HealthSpec.model_validate(run.config.get("health") or {})
    monitor = HealthMonitor(spec)
    monitor.replay(_records(run.norms), _records(run.checkpoints))
    return monitor.report()["collapse"]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as the dicts the runner wrote (pandas' NaN for absent values back to None)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) and k != "value" else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def growth_fits(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Least-squares fits of y(x) by a·√x, a·x and a·(e^{bx} − 1), their R², and the log-log slope."""
    keep = (x > 0) & np.isfinite(y)
    x, y = x[keep].astype(float), y[keep].astype(float)
    if len(x) < 3 or float(np.ptp(y)) == 0:
        return {}
    total = float(((y - y.mean()) ** 2).sum()) or 1.0

    def through_origin(basis: np.ndarray) -> tuple[float, float]:
        a = float(basis @ y / (basis @ basis))
        return a, 1 - float(((y - a * basis) ** 2).sum()) / total

    a_sqrt, r2_sqrt = through_origin(np.sqrt(x))
    a_lin, r2_lin = through_origin(x)
    best = (-math.inf, 0.0, 0.0)
    for b in np.geomspace(1e-6, 50.0 / x.max(), 400):  # grid over the rate, a in closed form
        a, r2 = through_origin(np.expm1(b * x))
        if r2 > best[0]:
            best = (r2, a, float(b))
    positive = y > 0
    slope = float(np.polyfit(np.log(x[positive]), np.log(y[positive]), 1)[0]) if positive.sum() >= 3 else float("nan")
    return {"sqrt": {"a": a_sqrt, "r2": r2_sqrt}, "linear": {"a": a_lin, "r2": r2_lin},
            "exponential": {"a": best[1], "b": best[2], "r2": best[0]}, "loglog_slope": slope}


def _request_norms(run: RunData) -> pd.DataFrame:
    requests = run.requests
    wanted = [c for c in ("delta_norm", "target_norm", "init_norm") if c in requests]
    if requests.empty or not wanted:
        return pd.DataFrame()
    steps = run.timings.set_index("step")["n_edits"] if "n_edits" in run.timings else None
    frame = requests[["step", *wanted]].copy()
    frame["n_edits"] = frame["step"].map(steps) if steps is not None else frame["step"]
    return frame


def feedback_numbers(run: RunData) -> dict[str, Any]:
    """Does the per-request update grow as the edited matrices grow? Spearman ρ between ‖δ‖ (and ‖z‖) and
    the mean ‖W‖ of the edited matrices before the request's batch, and first-tenth vs last-tenth means."""
    frame = _request_norms(run)
    curve = norm_curve(run)
    if frame.empty or curve.empty:
        return {}
    before = curve.set_index("step")["fro_mean"].shift(1, fill_value=float(curve["fro_mean"].iloc[0]))
    frame["fro_before"] = frame["step"].map(before)
    out: dict[str, Any] = {}
    tenth = max(1, len(frame) // 10)
    for column in ("delta_norm", "target_norm"):
        if column in frame and frame[column].notna().sum() > 3:
            rho = frame[[column, "fro_before"]].corr(method="spearman").iloc[0, 1]
            out[column] = {"spearman_vs_norm": float(rho), "first_tenth_mean": float(frame[column].iloc[:tenth].mean()),
                           "last_tenth_mean": float(frame[column].iloc[-tenth:].mean())}
    return out


def read_spectra(run: RunData) -> pd.DataFrame:
    """The run's ``spectra`` table (runner.spectra), from Parquet or JSONL; empty when it was not made."""
    for name, reader in ((rundir.parquet(rundir.SPECTRA), pd.read_parquet),
                         (rundir.jsonl(rundir.SPECTRA), lambda p: pd.read_json(p, lines=True))):
        file = run.path / name
        if file.exists() and file.stat().st_size > 0:
            return reader(file)
    return pd.DataFrame()


def spectra_numbers(run: RunData) -> dict[str, Any]:
    """Mean over the edited matrices of the spectrum figures at step 0 and at the last checkpoint."""
    table = read_spectra(run)
    if table.empty:
        return {}
    first, last = table[table["step"] == 0], table[table["step"] == table["step"].max()]
    columns = ["sigma_max", "condition_number", "effective_rank", "stable_rank", "top8_energy_share"]
    return {"at": float(last["n_edits"].max()),
            **{c: {"start": float(first[c].mean()), "end": float(last[c].mean())} for c in columns if c in table}}


def activation_numbers(run: RunData) -> dict[str, Any]:
    """Per layer at the last checkpoint: residual norm ratio, principal angle and CKA, with the noise floors."""
    rows = run.group("activation")
    if rows.empty:
        return {}
    rows = rows[rows["scope"] == SITE]
    last = rows.loc[rows["n_edits"] == rows["n_edits"].max()] if run.kind == "edit" else rows.loc[rows["step"] == rows["step"].max()]
    step0 = rows[rows["step"] == 0]

    def per_layer(frame: pd.DataFrame, name: str) -> dict[int, float]:
        part = frame[frame["name"] == name]
        return {int(layer): float(v) for layer, v in zip(part["layer"], part["value"], strict=True)}

    out = {
        "at": float(last["n_edits"].max()),
        "norm_ratio": per_layer(last, "residual_norm_rel"),
        "angle_mean_deg": per_layer(last, "principal_angle_mean_deg"),
        "cka": per_layer(last, "cka"),
        "cosine": per_layer(last, "cosine"),
        "energy_outside": per_layer(last, "energy_outside_topk"),
        "energy_outside_start": per_layer(step0, "energy_outside_topk"),
        "norm_ratio_floor": per_layer(step0, "residual_norm_rel_floor"),
        "angle_floor_deg": per_layer(step0, "principal_angle_mean_deg_floor"),
    }
    return out


def comparison_series(run: RunData, curve: pd.DataFrame) -> dict[str, dict[float, float]]:
    """Per edit count, the quantities runs are compared on (C5): norms after every batch, the rest at
    checkpoints (the hidden-state angle averaged over layers)."""
    series: dict[str, dict[float, float]] = {}
    if not curve.empty:
        series["norm growth ‖W‖/‖W₀‖ − 1"] = dict(zip(curve["x"].astype(float), curve["fro_rel_mean"] - 1, strict=True))
        series["‖W − W₀‖"] = dict(zip(curve["x"].astype(float), curve["dist_mean"], strict=True))
    ppl = _checkpoint_series(run, "downstream", "perplexity")
    if len(ppl):
        series["perplexity rise"] = {float(n): float(v - ppl.iloc[0]) for n, v in ppl.items()}
    angles = run.group("activation")
    angles = angles[(angles["name"] == "principal_angle_mean_deg") & (angles["scope"] == SITE)]
    if not angles.empty:
        series["mean hidden-state angle (°)"] = {float(n): float(v) for n, v in angles.groupby("n_edits")["value"].mean().items()}
    scope = retention_scope(run)
    for metric in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
        values = _checkpoint_series(run, "edit", metric, scope) if scope else pd.Series(dtype=float)
        if len(values):
            series[f"{metric.replace('_', ' ')} (retention)"] = {float(n): float(v) for n, v in values.items()}
    return series


def analyse(run: RunData, name: str) -> RunFindings:
    curve = norm_curve(run)
    size = int(curve["x"].max()) if not curve.empty else 0
    finding = RunFindings(name, _method(run), run.kind, size, run.progress.status)
    numbers = finding.numbers
    if not curve.empty:
        rel = curve["fro_rel_mean"].to_numpy()
        numbers["fro_rel_mean_end"] = float(rel[-1])
        numbers["fro_rel_max_end"] = float(curve["fro_rel_max"].iloc[-1])
        numbers["dist_mean_end"] = float(curve["dist_mean"].iloc[-1])
        numbers["rising_share"] = float((np.diff(curve["fro_mean"].to_numpy()) > 0).mean()) if len(rel) > 1 else float("nan")
        numbers["changed_matrices"] = int(_edited_norms(run)["matrix"].nunique())
        if run.kind == "intervention":
            last = _edited_norms(run)
            last = last[last["step"] == last["step"].max()]
            numbers["grew_share"] = float((last["fro_rel"] > 1).mean())
            numbers["by_kind"] = {str(k): float(v) for k, v in last.groupby("kind")["fro_rel"].mean().items()}
            loss = run.group("train")
            loss = loss[loss["name"] == "eval_loss"].sort_values("step")
            if not loss.empty:
                numbers["eval_loss"] = {"start": float(loss["value"].iloc[0]), "end": float(loss["value"].iloc[-1])}
            lr, decay = run.config.get("lr"), float(run.config.get("weight_decay") or 0.0)
            if lr and decay and run.config.get("kind") != "lora":  # LoRA's decay shrinks its factors, not W
                numbers["decay_alone"] = decay_alone(float(lr), decay, size)
        numbers["fits_dist"] = growth_fits(curve["x"].to_numpy(), curve["dist_mean"].to_numpy())
        numbers["fits_growth"] = growth_fits(curve["x"].to_numpy(), curve["fro_mean"].to_numpy() - curve["fro_mean"].iloc[0])
    if run.kind == "edit":
        ppl = _checkpoint_series(run, "downstream", "perplexity")
        if len(ppl):
            numbers["perplexity"] = {"start": float(ppl.iloc[0]), "end": float(ppl.iloc[-1]), "at": float(ppl.index[-1])}
        for task in ("sst2", "mmlu"):
            acc = _checkpoint_series(run, "downstream", f"{task}_accuracy")
            if len(acc):
                numbers[f"{task}_accuracy"] = {"start": float(acc.iloc[0]), "end": float(acc.iloc[-1])}
        scope = retention_scope(run)
        if scope:
            numbers["retention_scope"] = scope
            for metric in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
                series = _checkpoint_series(run, "edit", metric, scope)
                if len(series):
                    numbers[metric] = {"start": float(series.iloc[0]), "end": float(series.iloc[-1])}
        numbers["series"] = comparison_series(run, curve)
        numbers["collapse"] = collapse_points(run)
        numbers["spectra"] = spectra_numbers(run)
        numbers["feedback"] = feedback_numbers(run)
        examples = run.config.get("evaluation", {}).get("downstream_examples")
        numbers["downstream_examples"] = examples
    numbers["activations"] = activation_numbers(run)
    if run.progress.status == "failed":  # why it stopped short: a divergence stop is itself a finding
        numbers["stopped"] = run.progress.message
    return finding


# ---------------------------------------------------------------------------------------------- verdicts
@dataclass
class Verdict:
    claim: str
    title: str
    verdict: str  # shown / partly shown / not shown on this model / not measured
    lines: list[str]
    figure: str | None = None


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _weight_decay(run: RunFindings) -> float:
    """The weight decay in an intervention's label, ``kind (weight decay X)`` (:func:`_method`)."""
    return float(run.method.rsplit("weight decay ", 1)[-1].rstrip(")"))


def decay_alone(lr: float, weight_decay: float, steps: int) -> float:
    """‖W‖/‖W₀‖ after ``steps`` AdamW steps of decoupled decay and no gradient: each step multiplies W by
    1 − lr·wd (Loshchilov & Hutter 2019), at a constant learning rate as the interventions use."""
    return (1.0 - lr * weight_decay) ** steps


def _decay_lines(runs: Sequence[RunFindings]) -> list[str]:
    """Per intervention kind run with and without weight decay: which effect wins on ‖W‖/‖W₀‖ (decoupled
    decay alone shrinks every trained matrix, training grows them)."""
    lines = []
    for kind in C1_KINDS:
        pair = sorted((r for r in runs if r.method.startswith(kind + " ")), key=_weight_decay)
        if len(pair) < 2 or _weight_decay(pair[0]) != 0:
            continue
        plain, decayed = pair[0], pair[-1]
        ratio = decayed.numbers["fro_rel_mean_end"]
        winner = "training's growth wins: the norms still grow" if ratio > 1 else "decay wins: the norms shrink"
        losses = [f"{r.numbers['eval_loss']['start']:.3f} → {r.numbers['eval_loss']['end']:.3f}"
                  for r in (plain, decayed) if "eval_loss" in r.numbers]
        held_out = (f" Held-out loss {losses[0]} without decay, {losses[1]} with it." if len(losses) == 2 else "")
        alone = decayed.numbers.get("decay_alone")
        split = (f" Decay alone would give (1 − lr·wd)^steps = {_fmt(alone, 7)}; training's part is "
                 f"{ratio / alone - 1:+.2g} (without decay {plain.numbers['fro_rel_mean_end'] - 1:+.2g})."
                 if alone else "")
        lines.append(f"- {kind}, weight decay {_fmt(_weight_decay(decayed))} against none: ‖W‖/‖W₀‖ mean "
                     f"{_fmt(ratio, 7)} against {_fmt(plain.numbers['fro_rel_mean_end'], 7)}; {winner}.{split}{held_out}")
    return lines


def progress_word(status: str) -> str:
    """How far a run got, in words: finished, failed, or unfinished. A committed snapshot's status says
    "running" even when its run directory is long gone, so any other status reads as unfinished."""
    return status if status in ("finished", "failed") else "unfinished"


def _unfinished(run: RunFindings) -> str:
    """``, unfinished`` (or ``, failed``) after a run's size when it stopped short of its plan."""
    return "" if run.status == "finished" else f", {progress_word(run.status)}"


def verdict_c1(runs: Sequence[RunFindings]) -> Verdict:
    runs = [r for r in runs if r.kind == "intervention" and "fro_rel_mean_end" in r.numbers]
    if not runs:
        return Verdict("C1", "Post-training interventions grow the norms", "not measured",
                       ["No intervention run has completed a recorded step yet."])
    lines = [f"- {r.name} ({r.method}, {r.size} steps{_unfinished(r)}): trained matrices ‖W‖/‖W₀‖ mean {_fmt(r.numbers['fro_rel_mean_end'], 7)}, "
             f"{100 * r.numbers.get('grew_share', float('nan')):.0f}% of them grew; by kind "
             + ", ".join(f"{k} {_fmt(v, 7)}" for k, v in r.numbers.get("by_kind", {}).items())
             + (f"; held-out loss {r.numbers['eval_loss']['start']:.3f} → {r.numbers['eval_loss']['end']:.3f}"
                if "eval_loss" in r.numbers else "") for r in runs]
    lines += _decay_lines(runs)
    no_decay = [r for r in runs if _weight_decay(r) == 0]
    grew = [r for r in no_decay if r.numbers["fro_rel_mean_end"] > 1 and r.numbers.get("grew_share", 0) > 0.5]
    verdict = "shown" if no_decay and len(grew) == len(no_decay) else ("partly shown" if grew else "not shown on this model")
    missing = [k for k in C1_KINDS if not any(r.method.startswith(k + " ") for r in runs)]
    if missing and verdict == "shown":
        verdict = "partly shown"
    if missing:
        lines.append(f"- not run yet: {', '.join(missing)}")
    return Verdict("C1", "Post-training interventions grow the norms", verdict, lines, "findings_c1_interventions.png")


def verdict_c2(runs: Sequence[RunFindings]) -> Verdict:
    runs = [r for r in runs if r.kind == "edit" and "fro_rel_mean_end" in r.numbers]
    if not runs:
        return Verdict("C2", "Every editor grows the edited matrices with every edit", "not measured", ["No editing run yet."])
    lines = [f"- {r.method} ({r.size} edits{_unfinished(r)}): ‖W‖/‖W₀‖ mean "
             f"{_fmt(r.numbers['fro_rel_mean_end'], 6)} (max {_fmt(r.numbers['fro_rel_max_end'], 6)}) over "
             f"{r.numbers['changed_matrices']} edited matrices; the mean norm rose after "
             f"{100 * r.numbers['rising_share']:.0f}% of the batches" for r in runs]
    grew = [r for r in runs if r.numbers["fro_rel_mean_end"] > 1]
    steady = [r for r in grew if r.numbers["rising_share"] >= C2_RISING_SHARE]
    verdict = ("shown" if len(steady) == len(runs) else "partly shown" if len(grew) == len(runs) else
               "not shown on this model" if not grew else "partly shown")
    missing = [m for m in C2_METHODS if m not in {r.method for r in runs}]
    if missing and verdict == "shown":
        verdict = "partly shown"
    if missing:
        lines.append(f"- not run yet: {', '.join(missing)}")
    return Verdict("C2", "Every editor grows the edited matrices with every edit", verdict, lines, "findings_c2_norm_growth.png")


def _accuracy_noise(p: float, n: int | None) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n) if n else float("nan")


def verdict_c3(runs: Sequence[RunFindings]) -> Verdict:
    runs = [r for r in runs if r.kind == "edit" and r.size > 0]
    if not runs:
        return Verdict("C3", "Imbalance, degradation and collapse", "not measured", ["No editing run yet."])
    lines, degraded, collapsed = [], [], []
    for r in runs:
        n = r.numbers
        parts = []
        ppl = n.get("perplexity")
        if ppl:
            rise = ppl["end"] / ppl["start"] - 1
            parts.append(f"perplexity {ppl['start']:.2f} → {ppl['end']:.2f} ({100 * rise:+.1f}%) at {ppl['at']:.0f} edits")
            if rise >= REAL_PERPLEXITY_RISE:
                degraded.append(r.name)
        for task in ("sst2", "mmlu"):
            acc = n.get(f"{task}_accuracy")
            if acc:
                two_se = 2 * math.sqrt(2) * _accuracy_noise(acc["start"], n.get("downstream_examples"))
                drop = acc["start"] - acc["end"]
                parts.append(f"{task.upper()} {acc['start']:.3f} → {acc['end']:.3f} (noise ±{two_se:.3f})")
                if drop > two_se:
                    degraded.append(r.name)
        spec = n.get("spectra") or {}
        if spec.get("condition_number"):
            parts.append(f"edited matrices' condition number {spec['condition_number']['start']:.1f} → "
                         f"{spec['condition_number']['end']:.1f}, effective rank {spec['effective_rank']['start']:.1f} → "
                         f"{spec['effective_rank']['end']:.1f}, top-8 energy share {spec['top8_energy_share']['start']:.3f} → "
                         f"{spec['top8_energy_share']['end']:.3f}")
        hits = {k: v for k, v in (n.get("collapse") or {}).items() if v}
        if hits:
            collapsed.append(r.name)
            parts.append("collapse: " + ", ".join(f"{k} at {v['n_edits']:.0f} edits" for k, v in hits.items()))
        else:
            parts.append("no collapse criterion met")
        if n.get("stopped"):
            parts.append(n["stopped"])
        lines.append(f"- {r.method} ({r.size} edits): " + "; ".join(parts))
    verdict = "shown" if collapsed else "partly shown" if degraded else "not shown on this model"
    lines += ["", "Singular spectra of the edited matrices at the checkpoints (rebuilt from the runs' ledgers):", "",
              "![C3 spectra](IMAGE_PREFIXfindings_c3_spectra.png)"]
    return Verdict("C3", "Imbalance, degradation and collapse", verdict, lines, "findings_c3_degradation.png")


def _layer_summary(values: dict[int, float], floor: dict[int, float], kind: str) -> tuple[int, int, str]:
    """Layers moved beyond DRIFT_OVER_FLOOR x floor (count, of layers) and a phrase."""
    moved, total, worst = 0, 0, (0.0, -1)
    for layer, value in values.items():
        base = floor.get(layer)
        if base is None or not math.isfinite(value):
            continue
        total += 1
        size = abs(value - 1) if kind == "ratio" else value
        noise = abs(base - 1) if kind == "ratio" else base
        over = size / noise if noise > 0 else math.inf
        moved += over >= DRIFT_OVER_FLOOR
        worst = max(worst, (over, layer))
    return moved, total, f"largest at layer {worst[1]}: {worst[0]:.1f}× its floor" if total else ""


def verdict_c4(runs: Sequence[RunFindings]) -> Verdict:
    runs = [r for r in runs if r.kind == "edit" and r.numbers.get("activations", {}).get("norm_ratio")]
    if not runs:
        return Verdict("C4", "Activation norms fall; activations leave the unedited subspaces", "not measured",
                       ["No editing run has activation measurements with noise floors yet."])
    lines, fell, turned = [], 0, 0
    for r in runs:
        a = r.numbers["activations"]
        ratios = a["norm_ratio"]
        below = sum(v < 1 for v in ratios.values())
        n_moved, n_total, phrase = _layer_summary(ratios, a.get("norm_ratio_floor", {}), "ratio")
        a_moved, a_total, a_phrase = _layer_summary(a["angle_mean_deg"], a.get("angle_floor_deg", {}), "angle")
        low_layer = min(ratios, key=lambda k: ratios[k])
        fell += below > len(ratios) / 2 and n_moved > 0
        turned += a_total > 0 and a_moved > a_total / 2
        lines.append(
            f"- {r.method} at {a['at']:.0f} edits: residual-stream norm below the unedited model's in {below} of "
            f"{len(ratios)} layers (lowest {ratios[low_layer]:.4f} at layer {low_layer}); beyond {DRIFT_OVER_FLOOR:g}× "
            f"the noise floor in {n_moved} of {n_total} ({phrase}); hidden-state subspace angle beyond "
            f"{DRIFT_OVER_FLOOR:g}× its floor in {a_moved} of {a_total} layers ({a_phrase}); CKA min "
            f"{min(a['cka'].values()):.3f}")
    verdict = ("shown" if fell == len(runs) and turned == len(runs) else
               "partly shown" if fell or turned else "not shown on this model")
    lines += ["", "Over the edits, at the last edited layer, halfway up and at the last layer:", "",
              "![C4 over the edits](IMAGE_PREFIXfindings_c4_activation_curves.png)"]
    return Verdict("C4", "Activation norms fall; activations leave the unedited subspaces", verdict, lines,
                   "findings_c4_activations.png")


def verdict_c5(runs: Sequence[RunFindings]) -> Verdict:
    by_method = {r.method: r for r in runs if r.kind == "edit"}
    memit, encore = by_method.get("memit"), by_method.get("encore")
    if memit is None or encore is None or not memit.size or not encore.size:
        return Verdict("C5", "MPES and the norm constraint (ENCORE) slow it", "not measured",
                       ["Needs a MEMIT and an ENCORE run on the same facts."])
    lines: list[str] = []
    smaller = compared = 0
    for label, m_series in memit.numbers.get("series", {}).items():
        e_series = encore.numbers.get("series", {}).get(label, {})
        common = sorted(set(m_series) & set(e_series) - {0.0})
        if not common:
            continue
        n = common[-1]  # the largest edit count both runs measured
        a, b = m_series[n], e_series[n]
        lines.append(f"- {label} at {n:.0f} edits: MEMIT {_fmt(a)}, ENCORE {_fmt(b)}")
        if "retention" not in label:  # the damage measures; retention is the price, reported beside them
            compared += 1
            smaller += b < a
    verdict = ("not measured" if not compared else "shown" if smaller == compared else
               "partly shown" if smaller else "not shown on this model")
    lines.append(f"- runs so far: MEMIT {memit.size} edits, ENCORE {encore.size} edits; each figure is compared at "
                 "the largest edit count both measured")
    return Verdict("C5", "MPES and the norm constraint (ENCORE) slow it", verdict, lines, "findings_c2_norm_growth.png")


def verdict_feedback(runs: Sequence[RunFindings]) -> Verdict:
    runs = [r for r in runs if r.kind == "edit" and r.numbers.get("fits_dist")]
    if not runs:
        return Verdict("loop", "A norm-feedback loop (exponential growth)?", "not measured", ["No editing run yet."])
    lines, exponential = [], 0
    for r in runs:
        fits = r.numbers["fits_dist"]
        best = max(("sqrt", "linear", "exponential"), key=lambda k: fits[k]["r2"])
        fb = r.numbers.get("feedback", {}).get("delta_norm", {})
        rho = fb.get("spearman_vs_norm")
        lines.append(
            f"- {r.method} ({r.size} edits): ‖W − W₀‖ fits R² √n {fits['sqrt']['r2']:.4f}, linear {fits['linear']['r2']:.4f}, "
            f"exponential {fits['exponential']['r2']:.4f} (best: {best}); log-log slope {fits['loglog_slope']:.3f}; "
            + (f"per-request ‖δ‖ first tenth {fb['first_tenth_mean']:.2f}, last tenth {fb['last_tenth_mean']:.2f}, "
               f"Spearman ρ with ‖W‖ {rho:.2f}" if fb else "no per-request ‖δ‖ recorded"))
        exponential += best == "exponential" and fits["loglog_slope"] > 1 and (rho or 0) > 0.3
    verdict = "shown" if exponential == len(runs) else "partly shown" if exponential else "not shown on this model"
    return Verdict("loop", "A norm-feedback loop (exponential growth)?", verdict, lines, "findings_growth_fits.png")


# ---------------------------------------------------------------------------------------------- figures
def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


@styled
def figure_norm_growth(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    edit_runs = [(d, f) for d, f in runs if d.kind == "edit"]
    fig, (ax_rel, ax_dist) = new_figure(2, legend=True)
    plot_norm_curves(ax_rel, ax_dist, [(data, finding.method) for data, finding in edit_runs], band=True)
    ax_rel.set(ylabel="‖W‖/‖W₀‖, edited (mean; band: max)")
    _legend(ax_rel)
    fig.savefig(path)


def plot_norm_curves(ax_rel: Any, ax_dist: Any, runs: Sequence[tuple[RunData, str]], *, band: bool) -> None:
    """Mean ‖W‖/‖W₀‖ (with the max as a band when ``band``) and mean ‖W − W₀‖ of each run's changed
    matrices against its edits, one colour per run."""
    growth, distance = [], []
    for (data, label), color in zip(runs, series_colors(len(runs)), strict=True):
        curve = norm_curve(data)
        ax_rel.plot(curve["x"], curve["fro_rel_mean"], color=color, label=label)
        if band:
            ax_rel.fill_between(curve["x"], curve["fro_rel_mean"], curve["fro_rel_max"], color=color, alpha=0.15)
        ax_dist.plot(curve["x"], curve["dist_mean"], color=color, label=label)
        if not curve.empty:
            growth.append(float(curve["fro_rel_max" if band else "fro_rel_mean"].max()) - 1)
            distance.append(float(curve["dist_mean"].max()))
    ax_rel.set(xlabel="number of edits", ylabel="‖W‖/‖W₀‖, edited matrices (mean)")
    ax_dist.set(xlabel="number of edits", ylabel="‖W − W₀‖ (mean)")
    # One run far beyond the rest (a collapse) would flatten every other curve: switch to log axes.
    if _one_run_dominates(growth):
        ax_rel.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax_rel.yaxis.set_major_formatter(plain)
        ax_rel.yaxis.set_minor_formatter(plain)
    if _one_run_dominates(distance):
        ax_dist.set_yscale("symlog", linthresh=1.0)


def _one_run_dominates(peaks: Sequence[float], factor: float = 5.0) -> bool:
    """Whether the largest of the runs' peak values exceeds all the others' largest by ``factor``."""
    ordered = sorted(p for p in peaks if math.isfinite(p) and p > 0)
    return len(ordered) > 1 and ordered[-1] > factor * ordered[-2]


@styled
def figure_interventions(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    inter = [(d, f) for d, f in runs if d.kind == "intervention"]
    fig, (ax,) = new_figure(1, legend=True)
    for (data, finding), color in zip(inter, series_colors(len(inter)), strict=True):
        curve = norm_curve(data)
        ax.plot(curve["x"], curve["fro_rel_mean"], color=color, label=f"{finding.name}")
    ax.axhline(1.0, color="#999999", lw=0.8)
    ax.set(xlabel="training step", ylabel="‖W‖/‖W₀‖ of trained matrices (mean)")
    _legend(ax)
    fig.savefig(path)


@styled
def figure_degradation(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    edit_runs = [(d, f) for d, f in runs if d.kind == "edit"]
    fig, axes = new_figure(4, legend=True)
    panels = [("downstream", "perplexity", None, "perplexity / unedited", True),
              ("edit", "efficacy_score", "retention", "efficacy (retention sample)", False),
              ("downstream", "sst2_accuracy", None, "SST-2 accuracy", False),
              ("downstream", "mmlu_accuracy", None, "MMLU accuracy", False)]
    colors = series_colors(len(edit_runs))
    for ax, (group, name, scope, label, relative) in zip(axes, panels, strict=True):
        for (data, finding), color in zip(edit_runs, colors, strict=True):
            series = _checkpoint_series(data, group, name, retention_scope(data) if scope == "retention" else scope)
            if series.empty:
                continue
            values = series / series.iloc[0] if relative else series
            ax.plot(series.index, values, marker="o", ms=3, color=color, label=finding.method)
        ax.set(xlabel="number of edits", ylabel=label)
    _legend(axes[0])
    fig.savefig(path)


@styled
def figure_spectra(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    """Left: the spectrum of the top edited matrix of each run, unedited (grey) and at its last checkpoint;
    right: the mean condition number and effective rank of the edited matrices over the edits."""
    edit_runs = [(d, f, read_spectra(d)) for d, f in runs if d.kind == "edit"]
    edit_runs = [(d, f, t) for d, f, t in edit_runs if not t.empty]
    fig, (ax_sigma, ax_cond, ax_rank) = new_figure(3, legend=True)
    for (_, finding, table), color in zip(edit_runs, series_colors(len(edit_runs)), strict=True):
        top = table["layer"].max()
        at_top = table[table["layer"] == top]
        for step, style, alpha in ((0, ":", 0.7), (int(at_top["step"].max()), "-", 1.0)):
            row = at_top[at_top["step"] == step]
            if not row.empty:
                values = np.asarray(row["singular_values"].iloc[0], dtype=float)
                when = "unedited" if step == 0 else f"{int(row['n_edits'].iloc[0])} edits"
                ax_sigma.plot(np.arange(1, len(values) + 1), values, color=color, ls=style, alpha=alpha,
                              label=f"{finding.method}, layer {top}, {when}")
        per_step = table.groupby("n_edits")[["condition_number", "effective_rank"]].mean()
        ax_cond.plot(per_step.index, per_step["condition_number"], color=color, marker="o", ms=3, label=finding.method)
        ax_rank.plot(per_step.index, per_step["effective_rank"], color=color, marker="o", ms=3, label=finding.method)
    ax_sigma.set(xscale="log", yscale="log", xlabel="index i", ylabel="singular value σ_i")
    ax_cond.set(xlabel="number of edits", ylabel="condition number σ_1/σ_r (mean)")
    ax_rank.set(xlabel="number of edits", ylabel="effective rank (spectral entropy, mean)")
    _legend(ax_sigma)
    fig.savefig(path)


@styled
def figure_activations(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    edit_runs = [(d, f) for d, f in runs if d.kind == "edit" and f.numbers.get("activations", {}).get("norm_ratio")]
    fig, (ax_norm, ax_angle) = new_figure(2, legend=True)
    for (_, finding), color in zip(edit_runs, series_colors(len(edit_runs)), strict=True):
        a = finding.numbers["activations"]
        layers = sorted(a["norm_ratio"])
        ax_norm.plot(layers, [a["norm_ratio"][k] for k in layers], marker="o", ms=3, color=color,
                     label=f"{finding.method} at {a['at']:.0f}")
        ax_angle.plot(layers, [a["angle_mean_deg"][k] for k in layers], marker="o", ms=3, color=color)
    if edit_runs:
        a = edit_runs[0][1].numbers["activations"]
        floor = a.get("norm_ratio_floor", {})
        layers = sorted(floor)
        if layers:
            spread = [abs(floor[k] - 1) for k in layers]
            ax_norm.fill_between(layers, [1 - s for s in spread], [1 + s for s in spread], color="#cccccc",
                                 alpha=0.6, label="noise floor (probe halves)")
        angle_floor = a.get("angle_floor_deg", {})
        if angle_floor:
            ax_angle.plot(sorted(angle_floor), [angle_floor[k] for k in sorted(angle_floor)], color="#777777",
                          ls="--", label="noise floor (probe halves)")
    ax_norm.axhline(1.0, color="#999999", lw=0.8)
    ax_norm.set(xlabel="layer", ylabel="residual-stream norm / unedited")
    ax_angle.set(xlabel="layer", ylabel="mean principal angle, top-k PCA (°)")
    _legend(ax_norm)
    _legend(ax_angle)
    fig.savefig(path)


def tracked_layers(run: RunData) -> list[int]:
    """Three layers to follow over the edits: the last edited one, one halfway up, the last one."""
    rows = run.group("activation")
    layers = sorted({int(v) for v in rows["layer"].dropna()}) if not rows.empty else []
    if not layers:
        return []
    changed = _edited_norms(run)
    edited = sorted({int(v) for v in changed["layer"].dropna()}) if not changed.empty else []
    top = edited[-1] if edited else layers[0]
    return sorted({top, (top + layers[-1]) // 2, layers[-1]})


@styled
def figure_activation_curves(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    """Residual-stream norm ratio and subspace angle over the edits at the last edited layer, halfway up
    and at the last layer, each run in its colour, line style by layer."""
    edit_runs = [(d, f) for d, f in runs if d.kind == "edit" and not d.group("activation").empty]
    fig, (ax_norm, ax_angle, ax_energy) = new_figure(3, legend=True)
    styles = ("-", "--", ":")
    for (data, finding), color in zip(edit_runs, series_colors(len(edit_runs)), strict=True):
        rows = data.group("activation")
        rows = rows[rows["scope"] == SITE]
        for layer, style in zip(tracked_layers(data), styles, strict=False):
            at = rows[rows["layer"] == layer]
            for ax, name in ((ax_norm, "residual_norm_rel"), (ax_angle, "principal_angle_mean_deg"),
                             (ax_energy, "energy_outside_topk")):
                series = at[at["name"] == name].groupby("n_edits")["value"].mean()
                if name == "energy_outside_topk" and not series.empty:
                    series = series - series.iloc[0]  # its unedited level is the data's own tail: show the change
                if not series.empty:
                    ax.plot(series.index, series.to_numpy(), color=color, ls=style, marker="o", ms=2,
                            label=f"{finding.method}, layer {layer}")
    ax_norm.axhline(1.0, color="#999999", lw=0.8)
    ax_norm.set(xlabel="number of edits", ylabel="residual-stream norm / unedited")
    ax_angle.set(xlabel="number of edits", ylabel="mean principal angle (°)")
    ax_energy.set(xlabel="number of edits", ylabel="Δ energy share outside unedited top-k")
    _legend(ax_energy)
    fig.savefig(path)


@styled
def figure_growth_fits(runs: Sequence[tuple[RunData, RunFindings]], path: Path) -> None:
    edit_runs = [(d, f) for d, f in runs if d.kind == "edit" and f.numbers.get("fits_dist")]
    fig, (ax_fit, ax_delta) = new_figure(2, legend=True)
    for (data, finding), color in zip(edit_runs, series_colors(len(edit_runs)), strict=True):
        curve = norm_curve(data)
        x = curve["x"].to_numpy(dtype=float)
        fits = finding.numbers["fits_dist"]
        ax_fit.plot(x, curve["dist_mean"], color=color, lw=2, label=finding.method)
        ax_fit.plot(x, fits["sqrt"]["a"] * np.sqrt(x), color=color, ls=":", lw=1)
        ax_fit.plot(x, fits["exponential"]["a"] * np.expm1(fits["exponential"]["b"] * x), color=color, ls="--", lw=1)
        frame = _request_norms(data)
        if not frame.empty and "delta_norm" in frame:
            binned = frame.groupby(frame["n_edits"] // max(1, int(frame["n_edits"].max()) // 20))
            ax_delta.plot(binned["n_edits"].mean(), binned["delta_norm"].mean(), color=color, marker="o", ms=3,
                          label=f"{finding.method} ‖δ‖")
    ax_fit.set(xlabel="number of edits", ylabel="‖W − W₀‖ (mean; dotted a√n, dashed a(e^{bn}−1))")
    ax_delta.set(xlabel="number of edits", ylabel="per-request ‖δ‖ (binned mean)")
    _legend(ax_fit)
    fig.savefig(path)


FIGURES = {
    "findings_c1_interventions.png": figure_interventions,
    "findings_c2_norm_growth.png": figure_norm_growth,
    "findings_c3_degradation.png": figure_degradation,
    "findings_c3_spectra.png": figure_spectra,
    "findings_c4_activations.png": figure_activations,
    "findings_c4_activation_curves.png": figure_activation_curves,
    "findings_growth_fits.png": figure_growth_fits,
}


# ---------------------------------------------------------------------------------------------- the page
def replace_marked_block(text: str, start: str, end: str, body: str) -> str:
    """``text`` with whatever stands between the marker lines ``start`` and ``end`` replaced by ``body``
    (the README tables that the build scripts regenerate)."""
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def analyse_runs(paths: Sequence[Path]) -> list[tuple[RunData, RunFindings]]:
    runs = []
    for path in paths:
        data = load_run(path)
        runs.append((data, analyse(data, Path(path).name)))
    return runs


def verdicts(findings: Sequence[RunFindings]) -> list[Verdict]:
    return [verdict_c1(findings), verdict_c2(findings), verdict_c3(findings), verdict_c4(findings),
            verdict_c5(findings), verdict_feedback(findings)]


def render_markdown(title: str, found: Sequence[Verdict], findings: Sequence[RunFindings], image_prefix: str,
                    command: str | None = None) -> str:
    lines = [f"# {title}", ""]
    lines += ["| claim | verdict |", "|---|---|"]
    lines += [f"| {v.claim}: {v.title} | **{v.verdict}** |" for v in found]
    lines += ["", "Runs: " + ", ".join(f"{f.name} ({f.method}, {f.size} {'steps' if f.kind == 'intervention' else 'edits'}, "
                                       f"{progress_word(f.status)})" for f in findings), ""]
    for v in found:
        body = [line.replace("IMAGE_PREFIX", image_prefix) for line in v.lines]
        lines += [f"## {v.claim}: {v.title}", "", f"Verdict: **{v.verdict}**", "", *body, ""]
        if v.figure:
            lines += [f"![{v.claim}]({image_prefix}{v.figure})", ""]
    if command:
        lines += ["Reproduce: `" + command + "`", ""]
    return "\n".join(lines)


def write_findings(paths: Sequence[Path], out_dir: Path, *, title: str = "Findings", image_prefix: str = "",
                   command: str | None = None, markdown_path: Path | None = None) -> Path:
    """Analyse the runs, draw the figures into ``out_dir``, write ``findings.json`` there and the Markdown
    page (``markdown_path``, default ``out_dir/findings.md``, with images referenced as ``image_prefix`` +
    file name). Returns the Markdown file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = analyse_runs([Path(p) for p in paths if (Path(p) / rundir.PROGRESS).exists()])
    findings = [f for _, f in runs]
    found = verdicts(findings)
    for name, draw in FIGURES.items():
        draw(runs, out_dir / name)
    (out_dir / "findings.json").write_text(strict_json(
        {"verdicts": [{"claim": v.claim, "verdict": v.verdict, "lines": v.lines} for v in found],
         "runs": [{"name": f.name, "method": f.method, "kind": f.kind, "size": f.size, "status": f.status,
                   "numbers": f.numbers} for f in findings]}, indent=1) + "\n", encoding="utf-8")
    page = markdown_path or out_dir / "findings.md"
    page.write_text(render_markdown(title, found, findings, image_prefix, command), encoding="utf-8")
    return page
