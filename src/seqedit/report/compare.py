"""Compare runs: curves of several runs overlaid on shared axes, and a summary table.

Each run keeps its own checkpoint schedule (runs measured at different numbers of edits are drawn at their
own x positions). Runs are coloured in the order given and labelled by method (or run name). Edit runs and
intervention runs have different x axes (edits versus training steps) and cannot be mixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqedit.report.figures import (
    FigureOutcome,
    FigureResult,
    NotMeasured,
    Scale,
    changed_rows,
    checkpoint_x_values,
    save_figure,
    x_phrase,
    xy,
)
from seqedit.report.html import esc, figure_html, frame_table, page_html
from seqedit.report.loading import RunData, load_run, phase_columns, phase_name
from seqedit.report.numbers import headline_scope, key_number_map
from seqedit.report.style import (
    XScale,
    apply_xscale,
    format_number,
    format_ratio,
    format_signed,
    grid_shape,
    hide_unused,
    is_log_spaced,
    legend_right,
    new_figure,
    perplexity_y,
    series_colors,
    styled,
)
from seqedit.utils.io import write_text_atomic

# Edit-metric roles and the metric names that fill them, in order of preference (CounterFact, zsRE, top-1).
ROLE_METRICS: Mapping[str, tuple[str, ...]] = {
    "efficacy": ("efficacy_score", "rewrite_acc", "efficacy_top1"),
    "generalisation": ("paraphrase_score", "paraphrase_acc", "paraphrase_top1"),
    "locality": ("neighborhood_score", "neighborhood_acc", "neighborhood_top1"),
    "overall": ("score",),
}
ROLE_TITLES: Mapping[str, str] = {
    "efficacy": "efficacy",
    "generalisation": "generalisation (paraphrases)",
    "locality": "locality (neighbourhood)",
    "overall": "score (harmonic mean)",
}
ACTIVATION_SUMMARY = ("residual_norm_rel", "mlp_out_norm_rel", "principal_angle_mean_deg", "cka", "cosine")
ACTIVATION_TITLES: Mapping[str, str] = {
    "residual_norm_rel": "residual norm / unedited",
    "mlp_out_norm_rel": "MLP output norm / unedited",
    "principal_angle_mean_deg": "mean principal angle (°)",
    "cka": "linear CKA with unedited",
    "cosine": "cosine with unedited",
}
# Columns of the short table printed to the terminal: (column, header).
HEADLINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"),
    ("n_edits", "edits"),
    ("steps", "steps"),
    ("fro_final_mean", "final ‖W‖"),
    ("growth_mean", "growth × (mean)"),
    ("growth_max", "growth × (max)"),
    ("dist_from_init_mean", "‖W−W₀‖"),
    ("edit_scope", "edit scope"),
    ("ES", "ES"),
    ("PS", "PS"),
    ("NS", "NS"),
    ("S", "S"),
    ("downstream_delta_mean", "Δ downstream"),
    ("perplexity_ratio", "perplexity ×"),
    ("collapse", "collapse (edits)"),
    ("train_loss_final", "final loss"),
    ("time_per_unit_s", "s / edit"),
)


@dataclass(frozen=True, eq=False)
class ComparedRun:
    run: RunData
    label: str
    color: Any


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """Method names, made unique with the run name (then the directory) where two runs share one."""
    labels = [r.meta.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(labels[i]) > 1 and run.meta.name != labels[i]:
            labels[i] = f"{labels[i]} ({run.meta.name})"
    for i, run in enumerate(runs):
        if labels.count(labels[i]) > 1:
            labels[i] = f"{labels[i]} [{run.path.name}]"
    for i in range(len(labels)):
        if labels.count(labels[i]) > 1:
            labels[i] = f"{labels[i]} #{i + 1}"
    return labels


def prepare_runs(runs: Sequence[RunData]) -> list[ComparedRun]:
    if not runs:
        raise ValueError("compare needs at least one run directory")
    kinds = {r.kind for r in runs}
    if len(kinds) > 1:
        listing = ", ".join(f"{r.path} ({r.kind})" for r in runs)
        raise ValueError(
            "cannot overlay edit runs and intervention runs on shared axes (number of edits versus training "
            f"step): {listing}"
        )
    return [ComparedRun(r, label, color) for r, label, color in
            zip(runs, run_labels(runs), series_colors(len(runs)), strict=True)]


def _x_label(runs: Sequence[ComparedRun]) -> str:
    return runs[0].run.x_label


def _last_note(c: ComparedRun, x: float, text: str) -> str:
    return f"{c.label} {text} ({x_phrase(c.run.kind, x)})"


# ----------------------------------------------------------------------------------------------- figures


@styled
def compare_norm_growth(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Mean norm of the changed matrices per run (min–max band over matrices), absolute and relative."""
    key, title = "compare_norm_growth", "Norm growth of the changed matrices"
    panels = [
        ("fro", r"mean $\|W\|_F$"),
        ("fro_rel", r"$\|W\|_F / \|W_0\|_F$ (mean, band: min–max)"),
        ("dist_from_init", r"mean $\|W - W_0\|_F$"),
    ]
    present = [c for c in runs if not changed_rows(c.run.norms).empty]
    if not present:
        return NotMeasured(key, title, "no run has norm rows")
    fig, axes = new_figure(len(panels), legend=True)
    notes = []
    for c in present:
        rows = changed_rows(c.run.norms)
        x = c.run.x_column
        for ax, (column, _) in zip(axes, panels, strict=True):
            stats = rows.groupby(x)[column].agg(["mean", "min", "max"]).dropna()
            if stats.empty:
                continue
            xs = stats.index.to_numpy(dtype=float)
            ax.plot(xs, stats["mean"].to_numpy(), color=c.color, label=c.label)
            if column == "fro_rel" and (stats["max"] > stats["min"]).any():
                ax.fill_between(xs, stats["min"].to_numpy(), stats["max"].to_numpy(), color=c.color, alpha=0.15,
                                lw=0)
        final = rows[rows["step"] == rows["step"].max()]
        end = float(final[x].max())
        notes.append(_last_note(c, end, f"×{format_ratio(final['fro_rel'].mean())} mean, "
                                        f"×{format_ratio(final['fro_rel'].max())} max, "
                                        f"‖W−W₀‖ {format_number(final['dist_from_init'].mean())}"))
    for ax, (_, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel(_x_label(runs))
        ax.set_ylabel(ylabel)
        apply_xscale(ax, scale, [x for c in present for x in c.run.norms[c.run.x_column].dropna()])
    axes[1].axhline(1.0, color="#8c8c8c", lw=0.8, ls=":")
    fig.suptitle(title)
    legend_right(fig, axes[:1], title="run")
    caption = (
        "Frobenius norm of the matrices each run changed, averaged over those matrices: absolute (left), relative to "
        "the matrices before the run with the range over matrices shaded (middle), and the distance from the "
        "original weights (right). At the last step: " + "; ".join(notes) + "."
    )
    missing = [c.label for c in runs if c not in present]
    if missing:
        caption += " No norm rows: " + ", ".join(missing) + "."
    return FigureResult(key, title, fig, caption)


@styled
def compare_norm_profile(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Per-layer growth (last over first checkpoint) for each matrix kind, one line per run."""
    key, title = "compare_norm_profile", "Per-layer norm growth"
    ratios: dict[str, list[tuple[ComparedRun, pd.Series]]] = {}
    for c in runs:
        profile = c.run.group("profile")
        profile = profile[(profile["name"] == "fro") & profile["layer"].notna()]
        frame = profile.rename(columns={"scope": "kind"}) if not profile.empty else (
            c.run.norms.rename(columns={"fro": "value"}).dropna(subset=["layer"])
        )
        if frame.empty:
            continue
        first, last = frame["step"].min(), frame["step"].max()
        for kind, sub in frame.groupby("kind"):
            before = sub[sub["step"] == first].groupby("layer")["value"].mean()
            after = sub[sub["step"] == last].groupby("layer")["value"].mean()
            ratio = (after / before).dropna()
            if not ratio.empty and first != last:
                ratios.setdefault(str(kind), []).append((c, ratio))
    if not ratios:
        return NotMeasured(key, title, "no run has per-layer norms at two checkpoints")
    unchanged = sorted(k for k, pairs in ratios.items() if all(float((r - 1).abs().max()) < 1e-9 for _, r in pairs))
    kinds = [k for k in ratios if k not in unchanged] or list(ratios)
    kinds = sorted(kinds, key=lambda k: (-max(float(r.max()) for _, r in ratios[k]), k))[:3]
    fig, axes = new_figure(len(kinds), legend=True, sharey=True)
    notes = []
    for ax, kind in zip(axes, kinds, strict=True):
        for c, ratio in ratios[kind]:
            ax.plot(ratio.index.astype(float), ratio.to_numpy(), color=c.color, marker="o", ms=3, label=c.label)
            layer = int(ratio.idxmax())
            notes.append(f"{c.label} {kind} max ×{format_number(ratio.max())} at layer {layer}")
        ax.axhline(1.0, color="#8c8c8c", lw=0.8, ls=":")
        ax.set_title(kind)
        ax.set_xlabel("layer")
    axes[0].set_ylabel(r"$\|W\|_F$ last / first checkpoint")
    fig.suptitle(title)
    legend_right(fig, axes, title="run")
    caption = (
        "Per-layer ratio of each matrix's Frobenius norm at the last checkpoint to the first (1 = unchanged), one "
        "panel per matrix kind, shared y axis. " + "; ".join(notes) + "."
    )
    if unchanged and kinds != unchanged:
        caption += f" Unchanged in every run (not drawn): {', '.join(unchanged)}."
    return FigureResult(key, title, fig, caption)


def _role_series(run: RunData, role: str, scope: str) -> tuple[str, pd.DataFrame] | None:
    rows = run.group("edit")
    for name in ROLE_METRICS[role]:
        series = rows[(rows["name"] == name) & (rows["scope"] == scope)]
        if not series.empty:
            return name, series
    return None


@styled
def compare_edit_scores(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Efficacy, generalisation, locality and overall score per run; one row of panels per scope."""
    key, title = "compare_edit_scores", "Edit scores"
    scopes = [s for s in ("latest", "all") if any((c.run.group("edit")["scope"] == s).any() for c in runs)]
    roles = [r for r in ROLE_METRICS if any(_role_series(c.run, r, s) for c in runs for s in scopes)]
    if not scopes or not roles:
        return NotMeasured(key, title, "no run has edit metrics (group 'edit', scope 'latest' or 'all')")
    fig, axes = new_figure(len(roles), len(scopes), legend=True, sharey=True, panel_width=3.3, panel_height=2.9)
    notes, used_names = [], set()
    for row, scope in enumerate(scopes):
        for col, role in enumerate(roles):
            ax = axes[row * len(roles) + col]
            for c in runs:
                found = _role_series(c.run, role, scope)
                if found is None:
                    continue
                name, series = found
                used_names.add(name)
                xs, ys = xy(series, c.run.x_column, "value")
                ax.plot(xs, ys, color=c.color, marker="o", ms=3, label=c.label)
                if role == "overall" or (role == "efficacy" and "overall" not in roles):
                    notes.append(_last_note(c, xs[-1], f"{scope} {name} {format_number(ys[-1])}"))
            ax.set_title(f"{ROLE_TITLES[role]} — {scope}", fontsize=9.5)
            ax.set_xlabel(_x_label(runs))
            apply_xscale(ax, scale, checkpoint_union(runs))
        axes[row * len(roles)].set_ylabel("fraction of prompts")
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    legend_right(fig, axes, title="run")
    caption = (
        "Edit metrics of each run at its own checkpoints: top row for the latest batch, bottom row for all edits "
        "made so far (retention), where measured; shared y axis. Metrics used: "
        + ", ".join(sorted(used_names)) + ". Last checkpoint: " + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


@styled
def compare_downstream(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Every downstream metric measured by any run, one panel each, runs overlaid."""
    key, title = "compare_downstream", "Downstream abilities and perplexity"
    metrics: list[tuple[str, str]] = []
    for c in runs:
        for pair in c.run.group("downstream")[["name", "scope"]].drop_duplicates().itertuples(index=False):
            if tuple(pair) not in metrics:
                metrics.append(tuple(pair))
    if not metrics:
        return NotMeasured(key, title, "no run has downstream checkpoints")
    metrics.sort(key=lambda p: (p[0] == "perplexity", p[0], p[1]))
    nrows, ncols = grid_shape(len(metrics))
    fig, axes = new_figure(ncols, nrows, legend=True)
    notes = []
    for ax, (name, scope) in zip(axes, metrics, strict=False):
        for c in runs:
            rows = c.run.group("downstream")
            series = rows[(rows["name"] == name) & (rows["scope"] == scope)]
            if series.empty:
                continue
            xs, ys = xy(series, c.run.x_column, "value")
            ax.plot(xs, ys, color=c.color, marker="o", ms=3, label=c.label)
            change = f"×{format_number(ys[-1] / ys[0])}" if name == "perplexity" and ys[0] else format_signed(
                ys[-1] - ys[0]
            )
            notes.append(f"{c.label} {name}{f' ({scope})' if name == 'perplexity' else ''} "
                         f"{format_number(ys[-1])} ({change})")
        label = f"perplexity ({scope})" if name == "perplexity" else name.replace("_", " ")
        ax.set_title(label, fontsize=9.5)
        ax.set_xlabel(_x_label(runs))
        ax.set_ylabel("perplexity" if name == "perplexity" else "score")
        if name == "perplexity":
            perplexity_y(ax, [y for line in ax.lines for y in np.asarray(line.get_ydata()).ravel()])
        apply_xscale(ax, scale, checkpoint_union(runs))
    hide_unused(axes, len(metrics))
    fig.suptitle(title)
    legend_right(fig, axes, title="run")
    caption = (
        "Downstream task scores and perplexity of each run at its checkpoints (perplexity on a log axis when it spans more than a factor of 4). "
        "Last checkpoint (change from each run's first checkpoint): " + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


@styled
def compare_activations(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Activation drift averaged over layers, one panel per measure, runs overlaid."""
    key, title = "compare_activations", "Activation drift (mean over layers)"
    names = [n for n in ACTIVATION_SUMMARY if any((c.run.group("activation")["name"] == n).any() for c in runs)]
    if not names:
        return NotMeasured(key, title, "no run measured activations")
    nrows, ncols = grid_shape(len(names))
    fig, axes = new_figure(ncols, nrows, legend=True)
    notes = []
    for ax, name in zip(axes, names, strict=False):
        for c in runs:
            rows = c.run.group("activation")
            rows = rows[rows["name"] == name]
            if rows.empty:
                continue
            mean = rows.groupby(c.run.x_column)["value"].mean()
            ax.plot(mean.index.to_numpy(dtype=float), mean.to_numpy(), color=c.color, marker="o", ms=3, label=c.label)
            notes.append(_last_note(c, float(mean.index[-1]), f"{name} {format_number(mean.iloc[-1])}"))
        ax.set_title(ACTIVATION_TITLES[name], fontsize=9.5)
        ax.set_xlabel(_x_label(runs))
        ax.set_ylabel("mean over layers")
        apply_xscale(ax, scale, checkpoint_union(runs))
    hide_unused(axes, len(names))
    fig.suptitle(title)
    legend_right(fig, axes, title="run")
    missing = [c.label for c in runs if c.run.group("activation").empty]
    caption = (
        "Activation measures relative to each run's unedited model, averaged over all measured layers (and sites). "
        "Last checkpoint: " + "; ".join(notes) + "."
    )
    if missing:
        caption += " Not measured: " + ", ".join(missing) + "."
    return FigureResult(key, title, fig, caption)


@styled
def compare_timing(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    """Mean time per edit (per step for interventions) of each run, stacked by phase."""
    key, title = "compare_timing", "Time per edit by phase"
    per_run: list[tuple[ComparedRun, pd.Series, str]] = []
    for c in runs:
        timings = c.run.timings[c.run.timings["total_s"].notna()]
        if timings.empty:
            continue
        edits = float(timings["edits_in_step"].fillna(0).sum())
        per_edit = c.run.kind == "edit" and edits > 0
        divisor = edits if per_edit else float(len(timings))
        phases = {phase_name(col): float(timings[col].sum()) / divisor for col in phase_columns(timings)}
        other = float(timings["total_s"].sum()) / divisor - sum(phases.values())
        if other > 0.01 * float(timings["total_s"].sum()) / divisor:
            phases["other"] = other
        per_run.append((c, pd.Series(phases, dtype=float), "edit" if per_edit else "step"))
    if not per_run:
        return NotMeasured(key, title, "no run has timings")
    units = {unit for _, _, unit in per_run}
    unit = units.pop() if len(units) == 1 else "edit or step"
    title = f"Time per {unit} by phase"
    phase_order: list[str] = []
    for _, phases, _ in per_run:
        phase_order += [p for p in phases.index if p not in phase_order]
    colors = dict(zip(phase_order, series_colors(len(phase_order)), strict=True))
    fig, axes = new_figure(1, legend=True)
    fig.set_size_inches(7.5, 0.55 * len(per_run) + 1.6)
    ax = axes[0]
    for i, (_run, phases, _unit) in enumerate(per_run):
        left = 0.0
        for phase in phase_order:
            value = float(phases.get(phase, 0.0))
            if value > 0:
                ax.barh(i, value, left=left, color=colors[phase], label=phase, height=0.6)
                left += value
        ax.annotate(f"{format_number(left)} s", (left, i), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8.5)
    ax.set_yticks(range(len(per_run)), [c.label for c, _, _ in per_run])
    ax.invert_yaxis()
    ax.set_xlabel(f"mean seconds per {unit}")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.12)
    fig.suptitle(title)
    legend_right(fig, axes, title="phase")
    caption = (
        f"Mean wall-clock time per {unit} over each whole run, stacked by the editor's phases (one-off costs such "
        "as collecting covariance statistics are spread over all edits). "
        + "; ".join(f"{c.label} {format_number(p.sum())} s" for c, p, _ in per_run) + "."
    )
    return FigureResult(key, title, fig, caption)


@styled
def compare_train_loss(runs: Sequence[ComparedRun], scale: Scale) -> FigureOutcome:
    key, title = "compare_train_loss", "Training loss (moving average)"
    present = [c for c in runs if (c.run.group("train")["name"] == "loss").any()]
    if not present:
        return NotMeasured(key, title, "no run has training-loss rows")
    fig, axes = new_figure(1, legend=True)
    ax = axes[0]
    notes = []
    for c in present:
        rows = c.run.group("train")
        xs, ys = xy(rows[rows["name"] == "loss"], c.run.x_column, "value")
        window = max(1, len(ys) // 20)
        smooth = pd.Series(ys).rolling(window, min_periods=1).mean().to_numpy()
        ax.plot(xs, smooth, color=c.color, label=c.label)
        notes.append(_last_note(c, xs[-1], f"loss {format_number(smooth[-1])}"))
    ax.set_xlabel(_x_label(runs))
    ax.set_ylabel("training loss (moving average)")
    apply_xscale(ax, scale, [x for c in present for x in c.run.group("train")[c.run.x_column].dropna()])
    fig.suptitle(title)
    legend_right(fig, axes, title="run")
    caption = "Training loss of each intervention, as a moving average over 1/20 of its steps. " + "; ".join(
        notes) + "."
    return FigureResult(key, title, fig, caption)


CompareFunction = Callable[[Sequence[ComparedRun], Scale], FigureOutcome]
COMPARE_FIGURES: tuple[CompareFunction, ...] = (
    compare_norm_growth,
    compare_norm_profile,
    compare_edit_scores,
    compare_train_loss,
    compare_downstream,
    compare_activations,
    compare_timing,
)


def checkpoint_union(runs: Sequence[ComparedRun]) -> list[float]:
    return sorted({x for c in runs for x in checkpoint_x_values(c.run)})


def comparison_scale(runs: Sequence[ComparedRun], option: XScale) -> Scale:
    """A logarithmic x axis when any run's checkpoints are log-spaced (unless told otherwise)."""
    if option != "auto":
        return option
    return "log" if any(is_log_spaced(checkpoint_x_values(c.run)) for c in runs) else "linear"


def build_comparison_figures(runs: Sequence[ComparedRun], xscale: XScale = "auto") -> list[FigureOutcome]:
    scale = comparison_scale(runs, xscale)
    outcomes = [function(runs, scale) for function in COMPARE_FIGURES]
    kind = runs[0].run.kind
    # Edit-score figures are meaningless for interventions, and loss curves for edit runs: leave them out.
    irrelevant = {"compare_edit_scores"} if kind == "intervention" else {"compare_train_loss"}
    return [o for o in outcomes if isinstance(o, FigureResult) or o.key not in irrelevant]


# ----------------------------------------------------------------------------------------------- table


def comparison_table(runs: Sequence[ComparedRun]) -> pd.DataFrame:
    """One row per run: what was run, headline numbers, then every key number (CSV columns)."""
    records = []
    for c in runs:
        numbers = key_number_map(c.run)
        meta = c.run.meta
        record: dict[str, Any] = {
            "run": c.label,
            "run_dir": str(c.run.path),
            "method": meta.method,
            "model": meta.model,
            "dataset": meta.dataset,
            "batch_size": meta.batch_size,
        }
        record.update(_headline(c.run, numbers))
        record["collapse"] = collapse_cell(c.run.summary)
        record.update({k: v for k, v in numbers.items() if k not in record})
        records.append(record)
    return pd.DataFrame(records)


def collapse_cell(summary: Mapping[str, Any] | None) -> str | None:
    """The collapse criteria a run met, each with the edit count (or step) where it was first met:
    ``"norm_growth@120, perplexity@300"``; ``"none"`` when none was met; None for runs that predate the
    criteria (no ``collapse`` in summary.json)."""
    criteria = (summary or {}).get("collapse")
    if not isinstance(criteria, Mapping):
        return None
    met = sorted(
        ((hit.get("n_edits") or hit.get("step") or 0, name) for name, hit in criteria.items() if isinstance(hit, Mapping)),
    )
    return ", ".join(f"{name}@{count}" for count, name in met) if met else "none"


def _headline(run: RunData, numbers: Mapping[str, Any]) -> dict[str, Any]:
    scope = headline_scope(run)
    headline: dict[str, Any] = {"edit_scope": scope}
    for short, role in (("ES", "efficacy"), ("PS", "generalisation"), ("NS", "locality"), ("S", "overall")):
        found = next((f"{n}_{scope}" for n in ROLE_METRICS[role] if f"{n}_{scope}" in numbers), None)
        headline[short] = numbers.get(found) if found else None
    ratios = [v for k, v in numbers.items() if k.startswith("perplexity") and k.endswith("_ratio")]
    headline["perplexity_ratio"] = ratios[0] if ratios else None
    headline["time_per_unit_s"] = numbers.get("time_per_edit_s", numbers.get("time_per_step_s"))
    return headline


def headline_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The headline columns with readable headers and formatted numbers, for Markdown and the terminal."""
    interventions = "kind" in table.columns and (table["kind"] == "intervention").all()
    wanted = [
        (c, "s / step" if interventions and c == "time_per_unit_s" else h)
        for c, h in HEADLINE_COLUMNS
        if c != ("n_edits" if interventions else "steps")
    ]
    columns = [(c, h) for c, h in wanted if c in table.columns and table[c].notna().any()]
    frame = table[[c for c, _ in columns]].copy()
    formatted = frame.map(_format_cell)
    for column in RATIO_COLUMNS & set(frame.columns):
        formatted[column] = [format_ratio(v) if isinstance(v, float) else _format_cell(v) for v in frame[column]]
    formatted.columns = [h for _, h in columns]
    return formatted


RATIO_COLUMNS = frozenset({"growth_mean", "growth_max", "perplexity_ratio"})


def _format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(list(frame.columns)), row(["---"] * len(frame.columns))]
    lines += [row(list(values)) for values in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- output


def write_comparison(run_dirs: Sequence[str | Path], out_dir: str | Path, *, xscale: XScale = "auto") -> Path:
    """Overlay the runs in ``run_dirs``; write ``index.html``, ``summary.csv``, ``summary.md`` and figures.

    Returns the path of ``index.html``.
    """
    runs = prepare_runs([load_run(d) for d in run_dirs])
    out = Path(out_dir)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    outcomes = build_comparison_figures(runs, xscale)
    rendered = [(o, save_figure(o, figures_dir)["png"].read_bytes()) for o in outcomes if isinstance(o, FigureResult)]
    table = comparison_table(runs)
    write_text_atomic(out / "summary.csv", table.to_csv(index=False))
    write_text_atomic(out / "summary.md", markdown_table(headline_frame(table)))
    page = _comparison_page(runs, table, rendered, [o for o in outcomes if isinstance(o, NotMeasured)])
    index = out / "index.html"
    write_text_atomic(index, page)
    return index


def _comparison_page(
    runs: Sequence[ComparedRun],
    table: pd.DataFrame,
    rendered: Sequence[tuple[FigureResult, bytes]],
    not_measured: Sequence[NotMeasured],
) -> str:
    listing = pd.DataFrame(
        {
            "run": [c.label for c in runs],
            "method": [c.run.meta.method for c in runs],
            "model": [c.run.meta.model for c in runs],
            "dataset": [c.run.meta.dataset for c in runs],
            "edits": [c.run.meta.n_edits for c in runs],
            "batch size": [c.run.meta.batch_size for c in runs],
            "status": [c.run.progress.status for c in runs],
            "directory": [str(c.run.path) for c in runs],
        }
    )
    synthetic = [c.label for c in runs if c.run.is_synthetic]
    parts = [
        f"<h1>Comparison of {len(runs)} runs</h1>",
        f'<p class="sub">{esc(", ".join(c.label for c in runs))}</p>',
    ]
    if synthetic:
        parts.append(
            '<div class="banner"><b>Synthetic runs:</b> ' + esc(", ".join(synthetic))
            + " were generated by the test suite's <code>tests/report/synthetic_run.py</code>; their numbers were not "
            "measured.</div>"
        )
    unfinished = [c for c in runs if c.run.progress.status != "finished"]
    if unfinished:
        parts.append(
            '<div class="banner"><b>Not finished:</b> '
            + esc("; ".join(f"{c.label} ({c.run.progress.status})" for c in unfinished)) + "</div>"
        )
    parts += [
        "<h2>Runs</h2>",
        frame_table(listing),
        "<h2>Summary</h2>",
        "<p>Norms at each run's last step; edit scores at its last checkpoint (scope <i>all</i>: retention over every "
        "edit, where measured, else the latest batch); downstream change from its first checkpoint; time per edit "
        "over the whole run. The full table is in <code>summary.csv</code>.</p>",
        frame_table(headline_frame(table)),
        "<details><summary>All key numbers</summary>" + frame_table(table.map(_format_cell)) + "</details>",
    ]
    if not_measured:
        parts.append("<h2>Not measured in any run</h2><ul class=\"missing\">" + "".join(
            f"<li><b>{esc(n.title)}</b>: {esc(n.reason)}.</li>" for n in not_measured) + "</ul>")
    parts.append("<h2>Figures</h2>")
    parts += [figure_html(result, png, i + 1) for i, (result, png) in enumerate(rendered)]
    return page_html(f"seqedit comparison: {', '.join(c.label for c in runs)}", "\n".join(parts))
