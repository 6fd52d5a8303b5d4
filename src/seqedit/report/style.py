"""One look for every figure: rc settings, colours, number formatting, axis helpers.

Figures are built as :class:`matplotlib.figure.Figure` objects on an Agg canvas directly (never through
pyplot), so no global backend or figure registry is touched; SVG files come from the same figure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

XScale = Literal["auto", "linear", "log"]

STYLE: Mapping[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "grid.alpha": 0.8,
    "axes.axisbelow": True,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.7,
    "lines.markersize": 4.0,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "svg.hashsalt": "seqedit",  # stable ids: the same data gives the same SVG file
    "svg.fonttype": "path",  # glyphs as paths: the SVG renders identically without the font installed
}

PANEL_WIDTH_IN = 4.3
PANEL_HEIGHT_IN = 3.2
LEGEND_WIDTH_IN = 1.7

# Colour per edit-metric role (efficacy / generalisation / locality / overall), kept across figures.
ROLE_COLORS: Mapping[str, str] = {
    "efficacy": "#1f77b4",
    "generalisation": "#ff7f0e",
    "locality": "#2ca02c",
    "overall": "#222222",
}
BEFORE_COLOR = "#8c8c8c"
AFTER_COLOR = "#d62728"
EDITED_SPAN_COLOR = "#fde0c5"

P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Build the figure under :data:`STYLE` (rc values are read when artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(dict(STYLE)):  # type: ignore[arg-type]
            return fn(*args, **kwargs)

    return wrapper


def new_figure(
    ncols: int,
    nrows: int = 1,
    *,
    legend: bool = False,
    sharey: bool = False,
    sharex: bool = False,
    panel_width: float = PANEL_WIDTH_IN,
    panel_height: float = PANEL_HEIGHT_IN,
) -> tuple[Figure, list[Axes]]:
    """A figure with ``nrows x ncols`` panels (flattened), with room on the right for a legend."""
    width = panel_width * ncols + (LEGEND_WIDTH_IN if legend else 0.0)
    fig = Figure(figsize=(width, panel_height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    return fig, list(axes.ravel())


def grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for ``n_panels`` panels, at most ``max_cols`` per row."""
    cols = min(max_cols, max(1, n_panels))
    if n_panels == 4:
        cols = 2
    return math.ceil(n_panels / cols), cols


def hide_unused(axes: Sequence[Axes], used: int) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)


def legend_right(fig: Figure, axes: Sequence[Axes] | None = None, title: str | None = None, **kwargs: Any) -> None:
    """A figure legend outside the panels, on the right, so it never covers data."""
    handles, labels = [], []
    for ax in axes if axes is not None else fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title=title, **kwargs)


def series_colors(n: int) -> list[Any]:
    """Distinct colours: the qualitative tab10 palette up to ten series, viridis beyond."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.92, n)]


def layer_color_map(layers: Iterable[int]) -> tuple[Callable[[int], Any], Any]:
    """Colour for each layer on a sequential scale, and the ScalarMappable for a colour bar."""
    values = sorted(set(layers))
    lo, hi = (values[0], values[-1]) if values else (0, 1)
    norm = Normalize(vmin=lo, vmax=max(hi, lo + 1))
    cmap = colormaps["viridis"]
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    return (lambda layer: cmap(norm(layer) * 0.92)), mappable


def format_number(value: float | int | None) -> str:
    """Three significant digits, no scientific notation for ordinary magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    value = float(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.2e}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_ratio(value: float | int | None) -> str:
    """A growth factor: near 1, enough decimals to see the change (1.0004, not 1), with the same four
    decimals up to 2x so that a table's column reads evenly (1.0246, 1.1514)."""
    if value is not None and math.isfinite(float(value)) and 0.5 < abs(float(value)) < 2:
        return f"{float(value):.4f}"
    return format_number(value)


def format_signed(value: float | None) -> str:
    text = format_number(value)
    return text if text.startswith("-") or text == "n/a" else f"+{text}"


def is_log_spaced(values: Iterable[float]) -> bool:
    """True when the positive values look clearly geometric (1, 2, 4, ... or 10, 100, ...) rather than evenly
    spaced."""
    xs = np.unique(np.asarray([v for v in values if v is not None and v > 0], dtype=float))
    if len(xs) < 4 or xs[-1] / xs[0] < 16:
        return False
    diffs = np.diff(xs)
    log_ratios = np.diff(np.log(xs))
    cv_linear = float(np.std(diffs) / np.mean(diffs))
    cv_log = float(np.std(log_ratios) / np.mean(log_ratios))
    # Clearly geometric only: a few early checkpoints before an even schedule (10, 20, 50, 100, 150, 200)
    # stay linear, where a log axis would make steady growth look exponential.
    return cv_log < 0.6 * cv_linear


def resolve_xscale(option: XScale, checkpoint_x: Iterable[float]) -> Literal["linear", "log"]:
    if option != "auto":
        return option
    return "log" if is_log_spaced(checkpoint_x) else "linear"


def apply_xscale(ax: Axes, scale: Literal["linear", "log"], xs: Iterable[float]) -> None:
    """Linear axis, or a symmetric-log one that still shows the unedited model at x = 0."""
    if scale == "log":
        positive = [x for x in xs if x > 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0, linscale=0.4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlim(left=0)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def plain_log_y(ax: Axes) -> None:
    """Logarithmic y axis labelled with plain numbers (20, 50, 100) rather than powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def perplexity_y(ax: Axes, values: Iterable[float], log_above: float = 4.0) -> None:
    """Perplexity on a log axis when it spans more than ``log_above``-fold (a blow-up), else linear: a log
    axis over a narrow range has no tick to label."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if finite and max(finite) / min(finite) > log_above:
        plain_log_y(ax)


def shade_layers(ax: Axes, layers: Iterable[int], label: str | None = "edited layer") -> None:
    """Mark layers on a per-layer axis with light background bands."""
    for i, layer in enumerate(sorted(set(layers))):
        ax.axvspan(layer - 0.5, layer + 0.5, color=EDITED_SPAN_COLOR, zorder=0, lw=0, label=label if i == 0 else None)


def describe_layers(layers: Sequence[int]) -> str:
    """``[3, 4, 5, 7]`` -> ``"3–5, 7"``."""
    values = sorted(set(layers))
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}–{prev}" if prev > start else f"{start}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)
