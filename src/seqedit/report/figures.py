"""Figures of one run: one small function per figure, each returning the figure and its caption.

Every function takes a :class:`~seqedit.report.loading.RunData` and the x scale, and returns a
:class:`FigureResult`, or :class:`NotMeasured` (saying why) when the run holds no data for it, so that the
report states what was not measured instead of drawing empty axes. Captions end with the numbers at the
last checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seqedit.report.loading import RunData, RunKind, phase_columns, phase_name
from seqedit.report.style import (
    AFTER_COLOR,
    BEFORE_COLOR,
    ROLE_COLORS,
    XScale,
    apply_xscale,
    describe_layers,
    format_number,
    format_ratio,
    format_signed,
    grid_shape,
    hide_unused,
    layer_color_map,
    legend_right,
    new_figure,
    perplexity_y,
    resolve_xscale,
    series_colors,
    shade_layers,
    styled,
)
from seqedit.utils.io import atomic_path

Scale = Literal["linear", "log"]


@dataclass
class FigureResult:
    key: str  # file stem under figures/
    title: str
    figure: Figure
    caption: str


@dataclass(frozen=True)
class NotMeasured:
    key: str
    title: str
    reason: str


FigureOutcome = FigureResult | NotMeasured


@dataclass(frozen=True)
class FigureOptions:
    xscale: XScale = "auto"


# ------------------------------------------------------------------------------------ metric vocabulary

# Edit metrics: name -> (role, legend label, line style).
EDIT_SCORE_METRICS: Mapping[str, tuple[str, str, str]] = {
    "efficacy_score": ("efficacy", "efficacy (ES)", "-"),
    "paraphrase_score": ("generalisation", "paraphrase (PS)", "-"),
    "neighborhood_score": ("locality", "neighbourhood (NS)", "-"),
    "score": ("overall", "score (harmonic mean)", "-"),
    "rewrite_acc": ("efficacy", "rewrite accuracy", "-"),
    "paraphrase_acc": ("generalisation", "paraphrase accuracy", "-"),
    "neighborhood_acc": ("locality", "neighbourhood accuracy", "-"),
    "efficacy_top1": ("efficacy", "efficacy top-1", "--"),
    "paraphrase_top1": ("generalisation", "paraphrase top-1", "--"),
    "neighborhood_top1": ("locality", "neighbourhood top-1", "--"),
}
EDIT_MAGNITUDE_METRICS: Mapping[str, tuple[str, str, str]] = {
    "efficacy_magnitude": ("efficacy", "efficacy (EM)", "-"),
    "paraphrase_magnitude": ("generalisation", "paraphrase (PM)", "-"),
    "neighborhood_magnitude": ("locality", "neighbourhood (NM)", "-"),
}
SCOPE_TITLES: Mapping[str, str] = {
    "latest": "latest batch (just edited)",
    "all": "all edits so far (retention)",
    "sample": "fixed sample of edits",
}
ACTIVATION_UNITS: Mapping[str, str] = {
    "mlp_out_norm_rel": "ratio to unedited",
    "residual_norm_rel": "ratio to unedited",
    "principal_angle_mean_deg": "degrees",
    "principal_angle_max_deg": "degrees",
    "cka": "CKA",
    "cosine": "cosine similarity",
    "attn_share": "fraction of update norm",
    "mlp_share": "fraction of update norm",
}
ACTIVATION_LABELS: Mapping[str, str] = {
    "mlp_out_norm_rel": r"MLP output norm / unedited",
    "residual_norm_rel": r"residual norm / unedited",
    "principal_angle_mean_deg": "mean principal angle (°)",
    "principal_angle_max_deg": "max principal angle (°)",
    "cka": "linear CKA with unedited",
    "cosine": "cosine with unedited",
    "attn_share": "attention share of update",
    "mlp_share": "MLP share of update",
}
# Whether a larger value means more drift (used to pick the layer quoted in captions).
_LARGER_IS_DRIFT: Mapping[str, bool] = {
    "mlp_out_norm_rel": True,
    "residual_norm_rel": True,
    "principal_angle_mean_deg": True,
    "principal_angle_max_deg": True,
    "cka": False,
    "cosine": False,
    "attn_share": True,
    "mlp_share": True,
}
KNOWN_REQUEST_STATS = ("final_prob", "target_norm", "init_norm", "steps", "loss")


# ------------------------------------------------------------------------------------ shared helpers


def xy(frame: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (x, y) float arrays without missing y values."""
    rows = frame[[x, y]].dropna().sort_values(x)
    return rows[x].to_numpy(dtype=float), rows[y].to_numpy(dtype=float)


def x_phrase(kind: RunKind, x: float) -> str:
    """'after 100 edits' / 'at training step 120'."""
    if kind == "edit":
        n = int(x)
        return f"after {n} edit{'s' if n != 1 else ''}"
    return f"at training step {int(x)}"


def changed_rows(norms: pd.DataFrame) -> pd.DataFrame:
    """Norm rows, at every step including the unedited step 0, of the matrices the run changes at some
    point (all tracked ones when none is flagged ``edited``)."""
    changed = set(norms.loc[norms["edited"], "matrix"])
    return norms[norms["matrix"].isin(changed)] if changed else norms


def edited_layers(run: RunData) -> list[int]:
    """Layers whose matrices were changed: from the norm rows, else from the config (an editor's
    ``hparams.layers``, an intervention's ``lora_layers``)."""
    layers = run.norms.loc[run.norms["edited"], "layer"].dropna()
    if not layers.empty:
        return sorted({int(v) for v in layers})
    hparams = run.config.get("hparams")
    value = hparams.get("layers") if isinstance(hparams, dict) else run.config.get("lora_layers")
    return sorted(int(v) for v in value) if isinstance(value, list) else []


def matrix_labels(rows: pd.DataFrame) -> dict[str, str]:
    """Short unique legend labels (``L5 mlp_out``) for the matrices in ``rows``, in layer order."""
    first = rows.drop_duplicates("matrix").sort_values(["layer", "matrix"], na_position="last")
    labels: dict[str, str] = {}
    for matrix, layer, kind in first[["matrix", "layer", "kind"]].itertuples(index=False):
        short = f"L{int(layer)} {kind}" if pd.notna(layer) else matrix
        labels[matrix] = short if short not in labels.values() else matrix
    return labels


def last_checkpoint(frame: pd.DataFrame, x: str) -> float:
    return float(frame[x].dropna().max())


def checkpoint_x_values(run: RunData) -> list[float]:
    """x positions of the run's checkpoints (to choose a linear or logarithmic x axis)."""
    measured = run.checkpoints[run.checkpoints["group"] != "train"]
    source = measured if not measured.empty else run.norms
    return [float(v) for v in source[run.x_column].dropna().unique()]


def _scope_order(scopes: Iterable[str]) -> list[str]:
    known = [s for s in SCOPE_TITLES if s in scopes]
    return known + sorted(s for s in scopes if s not in SCOPE_TITLES)


# ------------------------------------------------------------------------------------ norms


MAX_MATRIX_LEGEND = 10
_KIND_LINESTYLES = ("-", "--", ":", "-.")


def _plot_matrices(fig: Figure, axes: Sequence[Axes], rows: pd.DataFrame, x: str, columns: Sequence[str]) -> dict[str, str]:
    """One line per matrix in each panel (``columns[i]`` in ``axes[i]``); return the matrix labels.

    Up to :data:`MAX_MATRIX_LEGEND` matrices get distinct colours and a legend; more are coloured by layer with a
    colour bar, and told apart by line style per matrix kind.
    """
    labels = matrix_labels(rows)
    info = rows.drop_duplicates("matrix").set_index("matrix")
    many = len(labels) > MAX_MATRIX_LEGEND
    kinds = sorted(info["kind"].unique())
    style = {k: _KIND_LINESTYLES[i % len(_KIND_LINESTYLES)] for i, k in enumerate(kinds)}
    color_of, mappable = layer_color_map(int(v) for v in rows["layer"].dropna())
    palette = series_colors(len(labels))
    for i, (matrix, label) in enumerate(labels.items()):
        sub = rows[rows["matrix"] == matrix]
        layer = info.at[matrix, "layer"]
        color = color_of(int(layer)) if many and pd.notna(layer) else palette[i]
        for ax, column in zip(axes, columns, strict=True):
            xs, ys = xy(sub[sub["step"] > 0] if column == "step_delta_fro" else sub, x, column)
            ax.plot(xs, ys, color=color, label=label, ls=style[info.at[matrix, "kind"]] if many else "-",
                    lw=1.1 if many else 1.7, marker="o" if column == "spectral" else None, ms=2.5 if many else 4)
    if not many:
        legend_right(fig, axes[:1], title="matrix")
        return labels
    fig.colorbar(mappable, ax=list(axes), label="layer", shrink=0.85, aspect=30)
    if len(kinds) > 1:
        handles = [Line2D([], [], color="#444444", ls=style[k], label=k) for k in kinds]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(kinds))
    return labels


def _matrix_phrases(
    final: pd.DataFrame,
    labels: Mapping[str, str],
    rank_by: str,
    describe: Callable[[str], str],
    limit: int = 8,
    prefix: str = "",
) -> str:
    """Every matrix's numbers in layer order, or for many matrices the three largest, the smallest and the median."""
    present = [m for m in labels if m in final.index]
    if len(present) <= limit:
        return "; ".join(describe(m) for m in present)
    ranked = final.loc[present, rank_by].dropna().sort_values(ascending=False)
    top = "; ".join(describe(m) for m in ranked.index[:3])
    return (
        f"largest {top}; …; smallest {describe(ranked.index[-1])} (median {prefix}{format_number(ranked.median())} over "
        f"{len(present)} matrices)"
    )


@styled
def norm_growth_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Norm of each edited (trained) matrix versus edits: absolute, relative to the original, spectral."""
    what = "edited" if run.kind == "edit" else "trained"
    key, title = "norm_growth", f"Norms of the {what} matrices"
    rows = changed_rows(run.norms)
    if rows.empty:
        return NotMeasured(key, title, "norms has no rows")
    x = run.x_column
    panels = [("fro", r"Frobenius norm $\|W\|_F$"), ("fro_rel", r"relative norm $\|W\|_F \,/\, \|W_0\|_F$")]
    if rows["spectral"].notna().any():
        panels.append(("spectral", r"spectral norm $\|W\|_2$"))
    fig, axes = new_figure(len(panels), legend=True)
    labels = _plot_matrices(fig, axes, rows, x, [column for column, _ in panels])
    for ax, (column, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel(run.x_label)
        ax.set_ylabel(ylabel)
        apply_xscale(ax, scale, rows[x].dropna())
        if column == "fro_rel":
            ax.axhline(1.0, color=BEFORE_COLOR, lw=0.8, ls=":")
    fig.suptitle(title)

    end = last_checkpoint(rows, x)
    final = rows[rows[x] == end].set_index("matrix")
    parts = _matrix_phrases(
        final, labels, "fro_rel",
        lambda m: f"{labels[m]} {format_number(final.at[m, 'fro'])} (×{format_ratio(final.at[m, 'fro_rel'])})",
        prefix="×",
    )
    worst = final["fro_rel"].idxmax() if final["fro_rel"].notna().any() else None
    kinds = ", ".join(sorted(rows["kind"].unique()))
    caption = (
        f"Frobenius norm ‖W‖_F of each of the {len(labels)} {what} matrices ({kinds}; layers "
        f"{describe_layers([int(v) for v in rows['layer'].dropna().unique()])}) after every step: absolute (left) "
        f"and relative to the matrix before the run (middle)"
        + ("; spectral norm ‖W‖₂ at the steps where it was measured (right)" if len(panels) == 3 else "")
        + f". {x_phrase(run.kind, end).capitalize()}: {parts}."
    )
    if worst is not None:
        caption += f" Largest growth: ×{format_ratio(final.at[worst, 'fro_rel'])} ({labels.get(worst, worst)})."
    return FigureResult(key, title, fig, caption)


def _profile_frame(run: RunData) -> tuple[pd.DataFrame, str]:
    """Per-layer norms as (step, layer, kind, value): checkpoint profile rows, else the tracked norm rows."""
    profile = run.group("profile")
    profile = profile[profile["name"] == "fro"]
    if not profile.empty and profile["layer"].notna().any():
        frame = profile.rename(columns={"scope": "kind"})[_unique(["step", run.x_column, "layer", "kind", "value"])]
        return frame.dropna(subset=["layer"]), "checkpoints (group 'profile')"
    frame = run.norms.rename(columns={"fro": "value"})[_unique(["step", run.x_column, "layer", "kind", "value"])]
    return frame.dropna(subset=["layer"]), "the tracked matrices in norms"


def _unique(columns: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(columns))


@styled
def norm_profile_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Per-layer norm profile before and after the run, edited layers shaded."""
    key, title = "norm_profile", "Per-layer norm profile before and after"
    frame, source = _profile_frame(run)
    if frame.empty:
        return NotMeasured(key, title, "no per-layer norms (no 'profile' checkpoints and no layer in norms)")
    first, last = int(frame["step"].min()), int(frame["step"].max())
    kinds = sorted(frame["kind"].unique())[:4]
    edited_by_kind = run.norms[run.norms["edited"]].groupby("kind")["layer"].apply(
        lambda s: sorted({int(v) for v in s.dropna()})
    )
    what = "edited" if run.kind == "edit" else "trained"
    fig, axes = new_figure(len(kinds), legend=True)
    after_x = float(frame.loc[frame["step"] == last, run.x_column].max())
    notes = []
    for ax, kind in zip(axes, kinds, strict=True):
        sub = frame[frame["kind"] == kind]
        before = sub[sub["step"] == first].groupby("layer")["value"].mean()
        after = sub[sub["step"] == last].groupby("layer")["value"].mean()
        shade_layers(ax, edited_by_kind.get(kind, []), label=f"{what} layer")
        # "before" is drawn on top: where nothing changed, the dashed grey line stays visible over the red one.
        ax.plot(before.index.astype(float), before.to_numpy(), color=BEFORE_COLOR, ls="--", marker="o", ms=3,
                zorder=3, label=f"before (step {first})")
        if last != first:
            after_label = f"{x_phrase(run.kind, after_x)} (step {last})" if run.kind == "edit" else f"after (step {last})"
            ax.plot(after.index.astype(float), after.to_numpy(), color=AFTER_COLOR, marker="o", lw=2.2,
                    zorder=2, label=after_label)
        ax.set_title(kind)
        ax.set_xlabel("layer")
        ax.set_ylabel(r"Frobenius norm $\|W\|_F$")
        ratio = (after / before).dropna()
        if not ratio.empty and last != first and (ratio - 1).abs().max() < 1e-6:
            notes.append(f"{kind}: unchanged")
        elif not ratio.empty and last != first:
            layer = int((ratio - 1).abs().idxmax())
            notes.append(
                f"{kind}: largest change at layer {layer}, {format_number(before[layer])} → "
                f"{format_number(after[layer])} (×{format_ratio(ratio[layer])})"
            )
    fig.suptitle(title)
    legend_right(fig, axes)
    layers = edited_layers(run)
    caption = (
        f"Frobenius norm of every layer's matrix of each kind ({', '.join(kinds)}), from {source}, before the run "
        f"(grey, dashed) and at the last checkpoint (red); shaded: {what} "
        f"layers ({describe_layers(layers)})."
    )
    if notes:
        caption += f" {x_phrase(run.kind, after_x).capitalize()}: " + "; ".join(notes) + "."
    else:
        caption += " Only one checkpoint holds per-layer norms, so no change can be shown."
    return FigureResult(key, title, fig, caption)


@styled
def weight_distance_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """‖W − W₀‖ of each changed matrix, and the norm of each step's update."""
    key, title = "weight_distance", "Distance from the original weights"
    rows = changed_rows(run.norms)
    if rows.empty or rows["dist_from_init"].isna().all():
        return NotMeasured(key, title, "norms has no 'dist_from_init' values")
    x = run.x_column
    panels = [("dist_from_init", r"$\|W - W_0\|_F$")]
    if rows["step_delta_fro"].notna().any():
        panels.append(("step_delta_fro", r"update norm of the step $\|\Delta W_t\|_F$"))
    fig, axes = new_figure(len(panels), legend=True)
    labels = _plot_matrices(fig, axes, rows, x, [column for column, _ in panels])
    for ax, (_, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel(run.x_label)
        ax.set_ylabel(ylabel)
        apply_xscale(ax, scale, rows[x].dropna())
    fig.suptitle(title)
    end = last_checkpoint(rows, x)
    final = rows[rows[x] == end].set_index("matrix")
    parts = _matrix_phrases(
        final, labels, "dist_from_init", lambda m: f"{labels[m]} {format_number(final.at[m, 'dist_from_init'])}"
    )
    caption = (
        "Frobenius distance ‖W − W₀‖_F of each changed matrix from its value before the run (left)"
        + (", and the norm of the update made in each step (right)" if len(panels) == 2 else "")
        + f". {x_phrase(run.kind, end).capitalize()}: ‖W − W₀‖_F = {parts}."
    )
    if len(panels) == 2:
        last_updates = final["step_delta_fro"].dropna()
        if not last_updates.empty:
            caption += f" Last step's update norm: {format_number(last_updates.mean())} on average."
    return FigureResult(key, title, fig, caption)


def growth_terms(rows: pd.DataFrame) -> pd.DataFrame:
    """Per matrix and step, the exact split of the norm growth ``‖W‖ − ‖W₀‖`` into the part along ``W₀``
    and the part that any update adds, from ``‖W‖² = ‖W₀‖² + 2⟨W₀, D⟩ + ‖D‖²`` with ``D = W − W₀``:
    ``along = 2⟨W₀, D⟩ / (‖W‖ + ‖W₀‖)`` and ``added = ‖D‖² / (‖W‖ + ‖W₀‖)``. Also ``dist_if_orthogonal``
    = ``(Σ_t ‖ΔW_t‖²)^½``, what ``‖D‖`` would be were the step updates mutually orthogonal (NaN where a
    step of the matrix is missing)."""
    out = rows.sort_values(["matrix", "step"]).copy()
    fro, fro0, dist = out["fro"], out["fro0"], out["dist_from_init"]
    inner2 = fro**2 - fro0**2 - dist**2  # 2⟨W₀, D⟩
    out["growth"] = fro - fro0
    out["growth_along_w0"] = inner2 / (fro + fro0)
    out["growth_added"] = dist**2 / (fro + fro0)
    squares = out["step_delta_fro"].where(out["step"] > 0, 0.0) ** 2
    out["dist_if_orthogonal"] = squares.groupby(out["matrix"]).cumsum() ** 0.5
    complete = out.groupby("matrix")["step"].transform(lambda st: bool((st.diff().dropna() == 1).all()))
    out.loc[~complete.astype(bool), "dist_if_orthogonal"] = np.nan
    return out


@styled
def growth_decomposition_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Why the norms grow: distance against the orthogonal-updates reference, and the exact split of the
    growth into the part along W₀ and the part the updates add (means over the changed matrices)."""
    key, title = "growth_decomposition", "Why the norms grow"
    rows = changed_rows(run.norms)
    needed = ("fro", "fro0", "dist_from_init", "step_delta_fro")
    if rows.empty or any(c not in rows or rows[c].isna().all() for c in needed):
        return NotMeasured(key, title, "norms lack fro0, dist_from_init or step_delta_fro")
    x = run.x_column
    terms = growth_terms(rows)
    mean = terms.groupby(x)[["dist_from_init", "dist_if_orthogonal", "growth", "growth_along_w0", "growth_added"]].mean()
    xs = mean.index.to_numpy(dtype=float)
    fig, axes = new_figure(2, legend=True)
    left, right = axes
    left.plot(xs, mean["dist_from_init"], color="C0", label="‖W − W₀‖ measured")
    has_reference = bool(mean["dist_if_orthogonal"].notna().any())
    if has_reference:  # needs the update of every step (edit runs); intervention norms are sampled
        left.plot(xs, mean["dist_if_orthogonal"], color="C0", ls="--", label="(Σ‖ΔW_t‖²)^½: orthogonal steps")
    left.set_ylabel(r"$\|W - W_0\|_F$ (mean over matrices)")
    right.plot(xs, mean["growth"], color="C1", label="‖W‖ − ‖W₀‖ measured")
    right.plot(xs, mean["growth_added"], color="C2", ls="--", label="added by ‖D‖²")
    right.plot(xs, mean["growth_along_w0"], color="C3", ls=":", label="along W₀ (⟨W₀, D⟩)")
    right.axhline(0, color="#888888", lw=0.8)
    right.set_ylabel(r"$\|W\|_F - \|W_0\|_F$ (mean over matrices)")
    for ax in axes:
        ax.set_xlabel(run.x_label)
        ax.legend(fontsize=8, loc="upper left")
        apply_xscale(ax, scale, xs)
    fig.suptitle(title)
    end = float(xs.max())
    last = mean.loc[mean.index.max()]
    ratio = last["dist_from_init"] / last["dist_if_orthogonal"] if last["dist_if_orthogonal"] else float("nan")
    reference = (
        f"orthogonal reference {format_number(last['dist_if_orthogonal'])} (ratio {ratio:.3f}); "
        if has_reference
        else "orthogonal reference not available (norms not recorded at every step); "
    )
    caption = (
        "Left: mean distance ‖W − W₀‖_F of the changed matrices from their original values, and what it would be "
        "if every step's update were orthogonal to all earlier ones ((Σ‖ΔW_t‖²)^½; a ratio near 1 means the "
        "distance grows like the square root of the number of steps). Right: the growth of the norm split exactly, "
        "from ‖W‖² = ‖W₀‖² + 2⟨W₀, D⟩ + ‖D‖² with D = W − W₀, into what any update adds (‖D‖²/(‖W‖ + ‖W₀‖), "
        "never negative) and the part along W₀ (2⟨W₀, D⟩/(‖W‖ + ‖W₀‖), negative when the updates lean against "
        f"W₀). {x_phrase(run.kind, end).capitalize()}: ‖W − W₀‖ {format_number(last['dist_from_init'])}, "
        + reference
        + f"growth {format_number(last['growth'])} = {format_number(last['growth_added'])} added "
        f"{'+' if last['growth_along_w0'] >= 0 else '−'} {format_number(abs(last['growth_along_w0']))} along W₀."
    )
    return FigureResult(key, title, fig, caption)


# ------------------------------------------------------------------------------------ activations


def _per_layer_figure(
    run: RunData, scale: Scale, key: str, title: str, names: Sequence[str], missing_reason: str
) -> FigureOutcome:
    """One panel per (metric, site), one line per layer, coloured by layer; edited layers drawn thick."""
    rows = run.group("activation")
    rows = rows[rows["name"].isin(names) & rows["layer"].notna()]
    if rows.empty:
        return NotMeasured(key, title, missing_reason)
    x = run.x_column
    panels = [
        (name, scope)
        for name in names
        for scope in sorted(rows.loc[rows["name"] == name, "scope"].unique())
    ]
    nrows, ncols = grid_shape(len(panels))
    fig, axes = new_figure(ncols, nrows)
    color_of, mappable = layer_color_map(int(v) for v in rows["layer"].unique())
    edited = set(edited_layers(run))
    notes = []
    for ax, (name, scope) in zip(axes, panels, strict=False):
        sub = rows[(rows["name"] == name) & (rows["scope"] == scope)]
        for layer in sorted(int(v) for v in sub["layer"].unique()):
            xs, ys = xy(sub[sub["layer"] == layer], x, "value")
            thick = layer in edited
            ax.plot(xs, ys, color=color_of(layer), lw=2.3 if thick else 1.0, alpha=1.0 if thick else 0.7,
                    label=f"layer {layer}")
        ax.set_title(f"{ACTIVATION_LABELS.get(name, name)}" + (f" [{scope}]" if scope else ""), fontsize=9.5)
        ax.set_xlabel(run.x_label)
        ax.set_ylabel(ACTIVATION_UNITS.get(name, name))
        apply_xscale(ax, scale, sub[x].dropna())
        notes.append(_per_layer_note(sub, x, name, scope))
    hide_unused(axes, len(panels))
    fig.colorbar(mappable, ax=axes[: len(panels)], label="layer", shrink=0.85, aspect=30)
    fig.suptitle(title)
    end = last_checkpoint(rows, x)
    caption = (
        f"Per-layer values at each checkpoint, one line per layer (colour: layer; thick lines: "
        f"{'edited' if run.kind == 'edit' else 'trained'} layers {describe_layers(sorted(edited))}), relative to "
        f"the model before the run. {x_phrase(run.kind, end).capitalize()}: " + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


def _per_layer_note(sub: pd.DataFrame, x: str, name: str, scope: str) -> str:
    end = sub[sub[x] == sub[x].max()]
    values = end.set_index("layer")["value"]
    layer = int(values.idxmax() if _LARGER_IS_DRIFT.get(name, True) else values.idxmin())
    word = "max" if _LARGER_IS_DRIFT.get(name, True) else "min"
    label = name + (f" [{scope}]" if scope else "")
    return f"{label} {word} {format_number(values[layer])} at layer {layer} (mean {format_number(values.mean())})"


@styled
def activation_norm_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    return _per_layer_figure(
        run, scale, "activation_norms", "Activation norms per layer",
        ("mlp_out_norm_rel", "residual_norm_rel"),
        "activation norms were not measured (no 'activation' checkpoints named mlp_out_norm_rel / residual_norm_rel)",
    )


@styled
def activation_similarity_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    return _per_layer_figure(
        run, scale, "activation_similarity", "Representation drift: principal angles, CKA, cosine",
        ("principal_angle_mean_deg", "principal_angle_max_deg", "cka", "cosine"),
        "representation similarity was not measured (no 'activation' checkpoints with principal angles, CKA "
        "or cosine)",
    )


@styled
def residual_share_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    return _per_layer_figure(
        run, scale, "residual_shares", "Attention and MLP shares of the residual update",
        ("attn_share", "mlp_share"),
        "attention/MLP shares were not measured (no 'activation' checkpoints named attn_share / mlp_share)",
    )


# ------------------------------------------------------------------------------------ edit metrics


def _edit_metric_figure(
    run: RunData,
    scale: Scale,
    key: str,
    title: str,
    metrics: Mapping[str, tuple[str, str, str]],
    ylabel: str,
    bounded: bool,
) -> FigureOutcome:
    rows = run.group("edit")
    rows = rows[rows["name"].isin(list(metrics))]
    if rows.empty:
        return NotMeasured(key, title, f"no 'edit' checkpoints named {', '.join(metrics)}")
    x = run.x_column
    scopes = _scope_order(rows["scope"].unique())
    fig, axes = new_figure(len(scopes), legend=True, sharey=True)
    notes = []
    for ax, scope in zip(axes, scopes, strict=True):
        sub = rows[rows["scope"] == scope]
        parts = []
        for name, (role, label, style) in metrics.items():
            series = sub[sub["name"] == name]
            if series.empty:
                continue
            xs, ys = xy(series, x, "value")
            ax.plot(xs, ys, color=ROLE_COLORS[role], ls=style, marker="o", lw=2.3 if role == "overall" else 1.7,
                    label=label)
            parts.append(f"{label} {format_number(ys[-1])}")
        ax.set_title(SCOPE_TITLES.get(scope, scope or "unscoped"))
        ax.set_xlabel(run.x_label)
        apply_xscale(ax, scale, sub[x].dropna())
        notes.append(f"{SCOPE_TITLES.get(scope, scope)} — " + ", ".join(parts))
    axes[0].set_ylabel(ylabel)
    if bounded:
        axes[0].set_ylim(-0.02, 1.02)
    else:
        for ax in axes:
            ax.axhline(0.0, color=BEFORE_COLOR, lw=0.8, ls=":")
    fig.suptitle(title)
    legend_right(fig, axes, title="metric")
    definitions = sorted(
        {f"{n}: {d}" for n, d in rows[["name", "definition"]].drop_duplicates().itertuples(index=False) if d}
    )
    end = last_checkpoint(rows, x)
    caption = (
        f"Edit metrics at each checkpoint, one panel per evaluated set of edits. "
        f"{x_phrase(run.kind, end).capitalize()}: " + "; ".join(notes) + "."
    )
    if definitions:
        caption += " Definitions: " + "; ".join(definitions) + "."
    return FigureResult(key, title, fig, caption)


@styled
def edit_score_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Efficacy, generalisation (paraphrase), locality (neighbourhood) and their harmonic mean versus edits."""
    return _edit_metric_figure(
        run, scale, "edit_scores", "Edit efficacy, generalisation, locality and retention",
        EDIT_SCORE_METRICS, "fraction of prompts", bounded=True,
    )


@styled
def edit_magnitude_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    return _edit_metric_figure(
        run, scale, "edit_magnitudes", "Edit magnitudes (probability margins)",
        EDIT_MAGNITUDE_METRICS, "mean probability difference", bounded=False,
    )


@styled
def fluency_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    key, title = "fluency", "Generation fluency"
    rows = run.group("edit")
    rows = rows[rows["name"] == "fluency_entropy"]
    if rows.empty:
        return NotMeasured(key, title, "fluency (n-gram entropy of generations) was not measured")
    x = run.x_column
    fig, axes = new_figure(1, legend=True)
    ax = axes[0]
    parts = []
    for color, scope in zip(series_colors(rows["scope"].nunique()), _scope_order(rows["scope"].unique()),
                            strict=True):
        xs, ys = xy(rows[rows["scope"] == scope], x, "value")
        ax.plot(xs, ys, color=color, marker="o", label=SCOPE_TITLES.get(scope, scope or "all prompts"))
        parts.append(f"{SCOPE_TITLES.get(scope, scope)} {format_number(ys[-1])} (first {format_number(ys[0])})")
    ax.set_xlabel(run.x_label)
    ax.set_ylabel("n-gram entropy (nats)")
    apply_xscale(ax, scale, rows[x].dropna())
    fig.suptitle(title)
    legend_right(fig, axes, title="prompts")
    end = last_checkpoint(rows, x)
    definition = ", ".join(sorted(d for d in rows["definition"].unique() if d))
    caption = (
        "Entropy of n-gram distributions of generated text (lower means more repetitive)"
        + (f", definition {definition}" if definition else "")
        + f". {x_phrase(run.kind, end).capitalize()}: " + "; ".join(parts) + "."
    )
    return FigureResult(key, title, fig, caption)


# ------------------------------------------------------------------------------------ downstream


@styled
def downstream_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Downstream task scores and perplexity versus edits."""
    key, title = "downstream", "Downstream abilities and perplexity"
    rows = run.group("downstream")
    if rows.empty:
        return NotMeasured(key, title, "no 'downstream' checkpoints (task scores, perplexity)")
    x = run.x_column
    tasks = rows[rows["name"] != "perplexity"]
    ppl = rows[rows["name"] == "perplexity"]
    panels = [p for p in (("tasks", tasks), ("perplexity", ppl)) if not p[1].empty]
    fig, axes = new_figure(len(panels), legend=True)
    notes = []
    all_keys = list(rows[["name", "scope"]].drop_duplicates().itertuples(index=False))
    color_of = dict(zip(all_keys, series_colors(len(all_keys)), strict=True))
    for ax, (panel, frame) in zip(axes, panels, strict=True):
        for name, scope in frame[["name", "scope"]].drop_duplicates().itertuples(index=False):
            color = color_of[(name, scope)]
            series = frame[(frame["name"] == name) & (frame["scope"] == scope)]
            xs, ys = xy(series, x, "value")
            label = name.replace("_", " ") if panel == "tasks" else f"perplexity ({scope})"
            ax.plot(xs, ys, color=color, marker="o", label=label)
            notes.append(_change_note(label, ys[0], ys[-1], ratio=panel == "perplexity"))
        ax.set_xlabel(run.x_label)
        ax.set_ylabel("score" if panel == "tasks" else "perplexity")
        if panel == "perplexity":
            perplexity_y(ax, frame["value"])
        ax.set_title("task scores" if panel == "tasks" else "language-model perplexity")
        apply_xscale(ax, scale, frame[x].dropna())
    fig.suptitle(title)
    legend_right(fig, axes)
    end = last_checkpoint(rows, x)
    first = float(rows[x].min())
    caption = (
        f"Downstream task scores (left) and perplexity (right) at each checkpoint; first checkpoint at "
        f"{run.x_label} {int(first)}. {x_phrase(run.kind, end).capitalize()} (change from the first checkpoint): "
        + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


def _change_note(label: str, first: float, last: float, *, ratio: bool) -> str:
    if ratio:
        factor = last / first if first else float("nan")
        return f"{label} {format_number(first)} → {format_number(last)} (×{format_ratio(factor)})"
    return f"{label} {format_number(first)} → {format_number(last)} ({format_signed(last - first)})"


# ------------------------------------------------------------------------------------ training


@styled
def train_loss_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Training curves of an intervention run (group ``train``): raw values and a moving average."""
    key, title = "train_loss", "Training loss"
    rows = run.group("train")
    if rows.empty:
        return NotMeasured(key, title, "no 'train' rows (training loss) in checkpoints")
    x = run.x_column
    names = sorted(rows["name"].unique(), key=lambda n: (n != "loss", n))
    fig, axes = new_figure(len(names), legend=True)
    notes = []
    for ax, name in zip(axes, names, strict=True):
        xs, ys = xy(rows[rows["name"] == name], x, "value")
        window = max(1, len(ys) // 20)
        smooth = pd.Series(ys).rolling(window, min_periods=1).mean().to_numpy()
        ax.plot(xs, ys, color="#9ecae1", lw=0.9, label="per step")
        ax.plot(xs, smooth, color="#08519c", lw=2.0, label=f"moving average ({window} steps)")
        ax.set_xlabel(run.x_label)
        ax.set_ylabel(name)
        apply_xscale(ax, scale, xs)
        notes.append(
            f"{name} {format_number(ys[-1])} (moving average {format_number(smooth[-1])}, minimum "
            f"{format_number(ys.min())}, first {format_number(ys[0])})"
        )
    fig.suptitle(title)
    legend_right(fig, axes[:1])
    end = last_checkpoint(rows, x)
    caption = (
        f"Training curves of the intervention, per step and as a moving average. "
        f"{x_phrase(run.kind, end).capitalize()}: " + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


# ------------------------------------------------------------------------------------ cost


def _phase_table(run: RunData) -> pd.DataFrame:
    """Seconds per phase and step, with an 'other' phase for time the editor did not attribute."""
    timings = run.timings
    columns = phase_columns(timings)
    table = timings[columns].fillna(0.0).rename(columns=phase_name)
    other = timings["total_s"].fillna(0.0) - table.sum(axis=1)
    if (other > 0.01 * timings["total_s"].fillna(0.0)).any():
        table["other"] = other.clip(lower=0.0)
    return table


@styled
def timing_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """Time per edit (per step for interventions) split by editor phase."""
    key, title = "timing", "Time per edit by phase" if run.kind == "edit" else "Time per step by phase"
    timings = run.timings[run.timings["total_s"].notna()]
    if timings.empty:
        return NotMeasured(key, title, "timings has no rows")
    per_edit = run.kind == "edit" and timings["edits_in_step"].fillna(0).gt(0).all()
    unit = "edit" if per_edit else "step"
    table = _phase_table(run).loc[timings.index]
    divisor = timings["edits_in_step"].astype(float).to_numpy() if per_edit else np.ones(len(timings))
    per_unit = table.div(divisor, axis=0)
    x_col = run.x_column if per_edit or run.kind != "edit" else "step"
    # Always a linear x axis here: on a log axis the step-wise bars would have misleading widths.
    xs = timings[x_col].astype(float).to_numpy()
    colors = series_colors(len(per_unit.columns))

    fig, axes = new_figure(2, legend=True)
    ax = axes[0]
    start = xs[0] - (divisor[0] if per_edit else 1.0)
    x_steps = np.concatenate([[start], xs])
    stacked = [np.concatenate([[v[0]], v]) for v in per_unit.T.to_numpy()]
    ax.stackplot(x_steps, *stacked, labels=list(per_unit.columns), colors=colors, step="pre", alpha=0.9)
    totals = per_unit.sum(axis=1).to_numpy()
    _clip_outliers(ax, xs, totals)
    ax.set_xlabel(run.x_label if x_col == run.x_column else "step")
    ax.set_ylabel(f"seconds per {unit}")
    ax.set_title("per step, stacked by phase")
    apply_xscale(ax, "linear", xs)

    mean = table.sum(axis=0) / (divisor.sum() if per_edit else len(timings))
    ax = axes[1]
    ax.barh(range(len(mean)), mean.to_numpy(), color=colors)
    ax.set_yticks(range(len(mean)), list(mean.index))
    ax.invert_yaxis()
    ax.set_xlabel(f"mean seconds per {unit}")
    ax.set_title("whole run")
    ax.grid(axis="y", visible=False)
    fig.suptitle(title)
    legend_right(fig, axes[:1], title="phase")

    occasional = [p for p in table.columns if 0 < int((table[p] > 0).sum()) < len(table)]
    caption = (
        f"Wall-clock time per {unit} in each step, stacked by editor phase (left), and the mean over the whole "
        f"run (right). Mean {format_number(mean.sum())} s per {unit} over {len(timings)} steps: "
        + ", ".join(f"{p} {format_number(v)} s" for p, v in mean.sort_values(ascending=False).items())
        + f". Last step: {format_number(totals[-1])} s per {unit}."
    )
    if occasional:
        caption += " Phases that ran in only some steps: " + ", ".join(
            f"{p} ({int((table[p] > 0).sum())} of {len(table)} steps)" for p in occasional
        ) + "."
    return FigureResult(key, title, fig, caption)


def _clip_outliers(ax: Axes, xs: np.ndarray, totals: np.ndarray) -> None:
    """Keep one slow step (e.g. a one-off covariance pass) from flattening the rest; label it instead."""
    if len(totals) < 4:
        return
    typical = float(np.percentile(totals, 90))
    if totals.max() <= 3 * typical:
        return
    top = 2.0 * typical
    ax.set_ylim(0, top)
    for x, total in zip(xs, totals, strict=True):
        if total > top:
            ax.annotate(f"↑ {format_number(total)} s", (x, top), xytext=(3, -12), textcoords="offset points",
                        fontsize=8, color="#444444")


# ------------------------------------------------------------------------------------ requests


@styled
def request_stats_figure(run: RunData, scale: Scale = "linear") -> FigureOutcome:
    """The editor's per-request statistics (target norm, final probability, ...) in edit order."""
    key, title = "request_stats", "Per-request editor statistics"
    requests = run.requests
    numeric = [
        c for c in requests.columns
        if c not in ("step", "case_id") and pd.api.types.is_numeric_dtype(requests[c]) and requests[c].notna().any()
        and not pd.api.types.is_bool_dtype(requests[c])
    ]
    if requests.empty or not numeric:
        return NotMeasured(key, title, "requests has no numeric per-request statistics")
    numeric = sorted(numeric, key=lambda c: (KNOWN_REQUEST_STATS.index(c) if c in KNOWN_REQUEST_STATS else 99, c))
    numeric = numeric[:6]
    nrows, ncols = grid_shape(len(numeric))
    fig, axes = new_figure(ncols, nrows)
    ordered = requests.sort_values("step", kind="stable").reset_index(drop=True)
    index = np.arange(1, len(ordered) + 1, dtype=float)
    window = max(3, len(ordered) // 15)
    notes = []
    for ax, column in zip(axes, numeric, strict=False):
        values = pd.to_numeric(ordered[column], errors="coerce")
        ax.scatter(index, values, s=6, color="#9ecae1", label="request")
        median = values.rolling(window, min_periods=1, center=True).median()
        ax.plot(index, median, color="#08519c", lw=2.0, label=f"rolling median ({window})")
        ax.set_title(column)
        ax.set_xlabel("edit number (request order)")
        ax.set_ylabel(column)
        first_step = values[ordered["step"] == ordered["step"].min()]
        last_step = values[ordered["step"] == ordered["step"].max()]
        notes.append(f"{column} {format_number(last_step.mean())} (first step {format_number(first_step.mean())})")
    hide_unused(axes, len(numeric))
    fig.suptitle(title)
    caption = (
        f"Statistics the editor reported for each of the {len(ordered)} requests, in the order they were edited, "
        f"with a rolling median. Mean over the last step's requests: " + "; ".join(notes) + "."
    )
    return FigureResult(key, title, fig, caption)


# ------------------------------------------------------------------------------------ registry

FigureFunction = Callable[[RunData, Scale], FigureOutcome]

# (function, run kinds for which a missing figure is reported as "not measured"). For other kinds the
# figure is drawn only when its data happens to exist.
RUN_FIGURES: tuple[tuple[FigureFunction, tuple[RunKind, ...]], ...] = (
    (norm_growth_figure, ("edit", "intervention")),
    (norm_profile_figure, ("edit", "intervention")),
    (weight_distance_figure, ("edit", "intervention")),
    (growth_decomposition_figure, ("edit", "intervention")),
    (train_loss_figure, ("intervention",)),
    (edit_score_figure, ("edit",)),
    (edit_magnitude_figure, ("edit",)),
    (fluency_figure, ("edit",)),
    (downstream_figure, ("edit", "intervention")),
    (activation_norm_figure, ("edit", "intervention")),
    (activation_similarity_figure, ("edit", "intervention")),
    (residual_share_figure, ("edit", "intervention")),
    (timing_figure, ("edit", "intervention")),
    (request_stats_figure, ("edit",)),
)


def build_figures(run: RunData, options: FigureOptions | None = None) -> list[FigureOutcome]:
    """Every figure of ``run`` in report order, with the figures it could not draw as :class:`NotMeasured`."""
    options = options or FigureOptions()
    scale = resolve_xscale(options.xscale, checkpoint_x_values(run))
    outcomes: list[FigureOutcome] = []
    for function, kinds in RUN_FIGURES:
        outcome = function(run, scale)
        if isinstance(outcome, FigureResult) or run.kind in kinds:
            outcomes.append(outcome)
    return outcomes


def save_figure(result: FigureResult, directory: Path) -> dict[str, Path]:
    """Write ``<key>.png`` and ``<key>.svg`` into ``directory`` (atomically); return their paths."""
    paths = {}
    for fmt in ("png", "svg"):
        target = directory / f"{result.key}.{fmt}"
        with atomic_path(target) as tmp:
            result.figure.savefig(tmp, format=fmt, metadata=_SAVE_METADATA[fmt])
        paths[fmt] = target
        # The layout computed for the PNG holds for the SVG too: freezing it saves a second layout pass.
        result.figure.set_layout_engine("none")
    return paths


_SAVE_METADATA: Mapping[str, Mapping[str, Any]] = {
    "png": {"Software": "seqedit report (matplotlib)"},
    "svg": {"Date": None, "Creator": "seqedit report (matplotlib)"},
}

