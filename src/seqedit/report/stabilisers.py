"""The stabiliser comparison (issue 11's study, ``examples/study/stabilisers.yaml``): MEMIT alone and with
each stabiliser, ENCORE with and without NAS, and UltraEdit, on one CounterFact stream. Reads compact run
results (as ``seqedit study --collect`` writes them), draws the figures and writes a Markdown page whose
table and recommendation are computed from the numbers, never typed in.

Runs are compared at the largest edit count that every run has reached *at a checkpoint* (so the edit
scores, perplexity and downstream accuracies are measured at the same point); a second table gives each
run at its latest checkpoint. A run that has not reached a checkpoint yet is listed, not compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqedit.report.findings import (
    _checkpoint_series,
    collapse_points,
    norm_curve,
    plot_norm_curves,
    progress_word,
    retention_scope,
)
from seqedit.report.loading import RunData, load_run
from seqedit.report.style import new_figure, series_colors, styled
from seqedit.utils.io import strict_json

# A remedy is only recommended when it keeps edits about as well as the method it stabilises: its
# efficacy on earlier edits may fall at most this much below the unstabilised run's at the same point.
EFFICACY_TOLERANCE = 0.05
RETENTION_METRICS = ("efficacy_score", "paraphrase_score", "neighborhood_score")
# Per-request figures that the stabilisers record (editors/stabilisers.py, ``stabilise_weights``).
ACTIVITY_COLUMNS = ("budget_matrices_scaled", "budget_min_factor", "prune_restrained_values", "prune_sigma_ratio_max",
                    "rect_kept_fraction", "nas_skipped", "nas_scale")


@dataclass
class StabiliserRun:
    """One run's numbers for the comparison."""

    name: str
    data: RunData
    edits: int  # edits completed (norms are recorded after every batch)
    checkpoints: list[int]  # edit counts with a checkpoint (edit scores, perplexity, downstream)
    seconds_per_edit: float | None
    at: dict[int, dict[str, float]] = field(default_factory=dict)  # edit count -> metric -> value
    collapse: dict[str, Any] = field(default_factory=dict)
    activity: dict[str, float] = field(default_factory=dict)
    status: str = "finished"  # progress.json's: an unfinished run is still being computed


def _seconds_per_edit(run: RunData) -> float | None:
    """Editing time per edit (the timings table: targets, keys, solve; checkpoints not included)."""
    timings = run.timings
    if timings.empty or "total_s" not in timings or "edits_in_step" not in timings:
        return None
    edits = float(timings["edits_in_step"].sum())
    return float(timings["total_s"].sum()) / edits if edits else None


def _activity(run: RunData) -> dict[str, float]:
    """How much the stabilisers acted over the run, from the per-request figures (the weight stabilisers'
    batch figures are repeated on each request of the batch, so take one row per step; NAS's are per request)."""
    requests = run.requests
    present = [c for c in ACTIVITY_COLUMNS if c in requests and requests[c].notna().any()]
    if not present:
        return {}
    per_step = requests.groupby("step")[present].first()
    out: dict[str, float] = {"batches": float(len(per_step))}
    if "budget_matrices_scaled" in per_step:
        scaled = per_step["budget_matrices_scaled"].fillna(0)
        out["budget_batches_acting"] = float((scaled > 0).sum())
        out["budget_matrix_rescales"] = float(scaled.sum())
        out["budget_min_factor"] = float(per_step["budget_min_factor"].min())
    if "prune_restrained_values" in per_step:
        out["prune_restrained_values_mean"] = float(per_step["prune_restrained_values"].mean())
        out["prune_batches_acting"] = float((per_step["prune_restrained_values"].fillna(0) > 0).sum())
    if "prune_sigma_ratio_max" in per_step:  # runs from before this figure existed lack it
        out["prune_sigma_ratio_last"] = float(per_step["prune_sigma_ratio_max"].dropna().iloc[-1])
    if "rect_kept_fraction" in per_step:
        out["rect_kept_fraction_mean"] = float(per_step["rect_kept_fraction"].mean())
    if "nas_skipped" in requests:
        out["nas_skipped_requests"] = float(requests["nas_skipped"].fillna(False).astype(bool).sum())
        out["nas_scale_mean"] = float(requests["nas_scale"].mean())
    return out


def _values_at(run: RunData, curve: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Metric values at each checkpoint edit count."""
    scope = retention_scope(run)
    series: dict[str, pd.Series] = {
        "perplexity": _checkpoint_series(run, "downstream", "perplexity"),
        "sst2_accuracy": _checkpoint_series(run, "downstream", "sst2_accuracy"),
        "mmlu_accuracy": _checkpoint_series(run, "downstream", "mmlu_accuracy"),
    }
    if scope:
        series.update({m: _checkpoint_series(run, "edit", m, scope) for m in RETENTION_METRICS})
    by_x = curve.set_index(curve["x"].astype(int)) if not curve.empty else curve
    counts = sorted({int(n) for s in series.values() for n in s.index})
    out: dict[int, dict[str, float]] = {}
    for n in counts:
        values = {name: float(s[n]) for name, s in series.items() if n in s.index}
        if n in by_x.index:
            values["fro_rel_mean"] = float(by_x.loc[n, "fro_rel_mean"])
            values["fro_rel_max"] = float(by_x.loc[n, "fro_rel_max"])
            values["dist_mean"] = float(by_x.loc[n, "dist_mean"])
        elif n == 0:
            values.update(fro_rel_mean=1.0, fro_rel_max=1.0, dist_mean=0.0)
        out[n] = values
    return out


def analyse_run(path: Path, name: str | None = None) -> StabiliserRun:
    data = load_run(path)
    curve = norm_curve(data)
    at = _values_at(data, curve)
    collapse = {k: v for k, v in collapse_points(data).items() if v}
    return StabiliserRun(
        name=name or path.name, data=data, edits=int(curve["x"].max()) if not curve.empty else 0,
        checkpoints=sorted(at), seconds_per_edit=_seconds_per_edit(data), at=at, collapse=collapse,
        activity=_activity(data), status=data.progress.status)


def common_checkpoint(runs: Sequence[StabiliserRun]) -> int | None:
    """The largest edit count > 0 at which every run has a checkpoint."""
    shared = set.intersection(*(set(r.checkpoints) for r in runs)) if runs else set()
    shared.discard(0)
    return max(shared) if shared else None


def compared_runs(runs: Sequence[StabiliserRun]) -> tuple[int | None, list[StabiliserRun]]:
    """The edit count the comparison and the recommendation use, and the runs compared there: the largest
    checkpoint every finished run has (every run's while none has finished), with every run that reached
    it. An unfinished run short of it is left out until it gets there, so that a run still being computed
    never pulls the comparison back to fewer edits."""
    n = common_checkpoint([r for r in runs if r.status == "finished"] or runs)
    return n, [r for r in runs if n is not None and n in r.checkpoints]


def base_run(run: StabiliserRun, runs: Sequence[StabiliserRun]) -> StabiliserRun | None:
    """The finished run of the same method that ``run`` stabilises (``memit`` for ``memit-prune``): the one
    named after the method, else the first finished run of that method; None when there is none."""
    method = run.data.config.get("method")
    same = [r for r in runs if r is not run and r.status == "finished" and r.data.config.get("method") == method]
    return next((r for r in same if r.name == method), same[0] if same else None)


def unfinished_pairs(runs: Sequence[StabiliserRun], waiting: Sequence[StabiliserRun]) -> list[tuple[StabiliserRun, StabiliserRun, int]]:
    """Each unfinished run with its base run at the unfinished run's latest checkpoint, where the base has
    one too: how far a stabiliser has got, read against the method it stabilises at the same edit count."""
    pairs = []
    for run in waiting:
        base = base_run(run, runs)
        latest = max((n for n in run.checkpoints if n > 0), default=None)
        if base is not None and latest is not None and latest in base.checkpoints:
            pairs.append((run, base, latest))
    return pairs


# ---------------------------------------------------------------------------------------------- the page
def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _count_or(value: float) -> str:
    """A whole number as one (counts of batches, values, requests), anything else to 4 decimals."""
    return str(int(value)) if float(value).is_integer() else _f(value, 4)


def comparison_row(run: StabiliserRun, n: int) -> str:
    """One Markdown row of TABLE_HEAD: the run's numbers at ``n`` edits."""
    v, start = run.at.get(n, {}), run.at.get(0, {})
    ppl_rise = v.get("perplexity", math.nan) - start.get("perplexity", math.nan)
    collapse = ", ".join(f"{k} at {c.get('n_edits', c.get('step'))}" for k, c in run.collapse.items()) or "none"
    return (f"| {run.name} | {_f(v.get('fro_rel_mean'), 4)} ({_f(v.get('fro_rel_max'), 4)}) | {_f(v.get('dist_mean'), 1)} | "
            f"{_f(v.get('efficacy_score'))} / {_f(v.get('paraphrase_score'))} / {_f(v.get('neighborhood_score'))} | "
            f"{_f(v.get('perplexity'), 2)} ({ppl_rise:+.2f}) | {_f(v.get('sst2_accuracy'))} / {_f(v.get('mmlu_accuracy'))} | "
            f"{_f(run.seconds_per_edit, 2)} | {collapse} |")


TABLE_HEAD = ["| run | ‖W‖/‖W₀‖ edited, mean (max) | ‖W − W₀‖ mean | ES / PS / NS (retention) | perplexity (rise) "
              "| SST-2 / MMLU | s per edit | collapse |", "|---|---|---|---|---|---|---|---|"]


def recommendation(runs: Sequence[StabiliserRun], n: int | None, baseline: str = "memit") -> list[str]:
    """Sentences the numbers back: at the common checkpoint, the run with the least norm growth among those
    whose efficacy stays within EFFICACY_TOLERANCE of the baseline's, and the run with the smallest
    perplexity rise. Says so when there is no common checkpoint or no baseline."""
    if n is None:
        return ["No checkpoint is shared by every run yet, so no remedy is recommended."]
    base = next((r for r in runs if r.name == baseline), None)
    if base is None or "efficacy_score" not in base.at.get(n, {}):
        return [f"The baseline run `{baseline}` has no edit scores at {n} edits, so no remedy is recommended."]
    floor = base.at[n]["efficacy_score"] - EFFICACY_TOLERANCE
    keeping = [r for r in runs if r.at.get(n, {}).get("efficacy_score", -1.0) >= floor]
    lines = []
    steady = min(keeping, key=lambda r: r.at[n].get("fro_rel_mean", math.inf))
    growth = {r.name: r.at[n].get("fro_rel_mean", math.nan) - 1 for r in runs}
    within = (f"At {n} edits, among the runs whose efficacy on earlier edits stays within {EFFICACY_TOLERANCE} of "
              f"{baseline}'s ({_f(base.at[n]['efficacy_score'])}), ")
    if steady is base:
        lines.append(within + f"none grows the edited matrices less than {baseline} itself "
                     f"(‖W‖/‖W₀‖ − 1 = {growth[baseline]:.4f}).")
    else:
        lines.append(within + f"**{steady.name}** grows the edited matrices least: ‖W‖/‖W₀‖ − 1 = "
                     f"{growth[steady.name]:.4f} against {growth[baseline]:.4f} for {baseline} "
                     f"(efficacy {_f(steady.at[n]['efficacy_score'])}).")
    dropped = [r.name for r in runs if r not in keeping]
    if dropped:
        lines.append("Below that efficacy: " + ", ".join(
            f"{name} ({_f(next(r for r in runs if r.name == name).at.get(n, {}).get('efficacy_score'))})" for name in dropped) + ".")
    rises = {r.name: r.at[n].get("perplexity", math.nan) - r.at.get(0, {}).get("perplexity", math.nan) for r in runs}
    finite = {k: v for k, v in rises.items() if not math.isnan(v)}
    if finite:
        best = min(finite, key=lambda k: finite[k])
        lines.append(f"The smallest perplexity rise at {n} edits: {best} ({finite[best]:+.2f}; {baseline} "
                     f"{rises.get(baseline, math.nan):+.2f}).")
    return lines


@styled
def figure_norms(runs: Sequence[StabiliserRun], path: Path) -> None:
    fig, (ax_rel, ax_dist) = new_figure(2, legend=True)
    plot_norm_curves(ax_rel, ax_dist, [(run.data, run.name) for run in runs], band=False)
    ax_rel.legend(loc="best")
    fig.savefig(path)


@styled
def figure_quality(runs: Sequence[StabiliserRun], path: Path) -> None:
    fig, (ax_es, ax_ppl) = new_figure(2, legend=True)
    for run, color in zip(runs, series_colors(len(runs)), strict=True):
        counts = run.checkpoints
        ax_es.plot(counts, [run.at[n].get("efficacy_score", math.nan) for n in counts], "o-", color=color, ms=3,
                   label=run.name)
        ax_ppl.plot(counts, [run.at[n].get("perplexity", math.nan) for n in counts], "o-", color=color, ms=3,
                    label=run.name)
    ax_es.set(xlabel="number of edits", ylabel="efficacy score on earlier edits (fixed sample)")
    ax_ppl.set(xlabel="number of edits", ylabel="perplexity (WikiText-2 valid)")
    ax_es.legend(loc="best")
    fig.savefig(path)


FIGURES = {"stabilisers_norms.png": figure_norms, "stabilisers_quality.png": figure_quality}


def render(runs: Sequence[StabiliserRun], image_prefix: str, intro: str) -> str:
    n, compared = compared_runs(runs)
    waiting = [r for r in runs if r not in compared]
    lines = ["# Stabilisers compared", "", intro, "",
             "Runs: " + ", ".join(f"{r.name} ({r.edits} edits, {progress_word(r.status)})" for r in runs), ""]
    lines += ["## Recommendation", "", *recommendation(compared, n), ""]
    if waiting:
        lines += [f"Not yet at {n} edits, so not compared: " + ", ".join(
            f"{r.name} ({r.edits} edits, {progress_word(r.status)})" for r in waiting) + ".", ""]
    if n is not None:
        lines += [f"## At {n} edits (the largest checkpoint every finished run has reached)", "", *TABLE_HEAD,
                  *[comparison_row(r, n) for r in compared], ""]
    shared = common_checkpoint(runs)
    if waiting and shared is not None:
        lines += [f"## At {shared} edits (every run, the unfinished ones included)", "", *TABLE_HEAD,
                  *[comparison_row(r, shared) for r in runs], ""]
    pairs = unfinished_pairs(runs, waiting)
    if pairs:
        lines += ["## Unfinished runs against the method they stabilise, at the same edit count", "",
                  "Each unfinished run at its latest checkpoint, under the finished run of the same method at that "
                  "edit count.", "", *TABLE_HEAD]
        for run, base, at in pairs:
            lines += [comparison_row(run, at).replace(f"| {run.name} |", f"| {run.name} at {at} |", 1),
                      comparison_row(base, at).replace(f"| {base.name} |", f"| {base.name} at {at} |", 1)]
        lines += [""]
    lines += ["## Each run at its latest checkpoint", "", *TABLE_HEAD[:1], *TABLE_HEAD[1:],
              *[comparison_row(r, max(r.checkpoints)) for r in runs if r.checkpoints], ""]
    lines += ["Edit counts of those checkpoints: " + ", ".join(
        f"{r.name} {max(r.checkpoints)}" for r in runs if r.checkpoints) + ".", ""]
    acting = [r for r in runs if r.activity]
    if acting:
        lines += ["## How much each stabiliser acted", "", "| run | batches | figures |", "|---|---|---|"]
        lines += [f"| {r.name} | {int(r.activity['batches'])} | " + ", ".join(
            f"{k} {_count_or(v)}" for k, v in r.activity.items() if k != "batches") + " |" for r in acting]
        lines += [""]
    lines += ["## Figures", "", *[f"![{name}]({image_prefix}{name})" for name in FIGURES], ""]
    return "\n".join(lines)


def write_page(paths: Sequence[tuple[str, Path]], out_dir: Path, page: Path, *, image_prefix: str,
               intro: str) -> list[StabiliserRun]:
    """Analyse ``(name, run directory)`` pairs, draw the figures into ``out_dir``, write ``stabilisers.json``
    there and the Markdown ``page``."""
    runs = [analyse_run(path, name) for name, path in paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(runs, out_dir / name)
    (out_dir / "stabilisers.json").write_text(strict_json({
        "common_checkpoint": common_checkpoint(runs),
        "compared_at": compared_runs(runs)[0],
        "runs": [{"name": r.name, "edits": r.edits, "status": r.status, "checkpoints": r.checkpoints,
                  "seconds_per_edit": r.seconds_per_edit, "at": {str(k): v for k, v in r.at.items()},
                  "collapse": r.collapse, "activity": r.activity} for r in runs]}, indent=1) + "\n", encoding="utf-8")
    page.write_text(render(runs, image_prefix, intro), encoding="utf-8")
    return runs
