"""The self-contained HTML report of one run.

Figures are embedded as base64 PNG data URIs (so the page needs neither network nor the files next to it),
and also written as PNG and SVG under ``figures/`` beside the page. The page has no JavaScript and no
external CSS.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from seqedit import __version__, rundir
from seqedit.report.figures import (
    FigureOptions,
    FigureResult,
    NotMeasured,
    build_figures,
    save_figure,
)
from seqedit.report.loading import RunData, load_run
from seqedit.report.numbers import KeyNumber, downstream_table, edit_score_table, key_numbers
from seqedit.report.style import XScale, describe_layers, format_number
from seqedit.utils.io import write_text_atomic

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --line: #e3e3e3; --accent: #1f5fa8; --warn: #fff4e5; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h3 { font-size: 14.5px; margin: 10px 0 2px; color: #333; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 16px; }
.banner { background: var(--warn); border-left: 4px solid #f0a030; padding: 8px 12px; margin: 12px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 40px; align-items: flex-start; }
.scroll { overflow-x: auto; }
figure { margin: 22px 0 30px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); }
figcaption { margin-top: 6px; color: #333; font-size: 14px; }
figcaption a { color: var(--accent); font-size: 12.5px; }
nav ol { columns: 2; margin: 4px 0; }
ul.missing li { color: var(--muted); }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12.5px; }
details summary { cursor: pointer; color: var(--accent); }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""

GROUP_ORDER = ("edit", "downstream", "activation", "profile", "train")
SCOPE_MEANINGS: Mapping[str, str] = {
    "latest": "the edits of the step just made",
    "all": "every edit made so far (retention)",
    "sample": "a fixed sample of edits",
}


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, xscale: XScale = "auto") -> Path:
    """Write ``index.html`` and ``figures/*.png|svg`` for one run; return the path of ``index.html``.

    ``out_dir`` defaults to ``run_dir/report``. ``xscale`` chooses the x axis of the curves: ``auto`` uses a
    logarithmic one when the checkpoints are log-spaced.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "report"
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    outcomes = build_figures(run, FigureOptions(xscale=xscale))
    rendered = [(o, save_figure(o, figures_dir)["png"].read_bytes()) for o in outcomes if isinstance(o, FigureResult)]
    page = render_run_page(run, rendered, [o for o in outcomes if isinstance(o, NotMeasured)])
    index = out / "index.html"
    write_text_atomic(index, page)
    return index


# ----------------------------------------------------------------------------------------------- page


def render_run_page(
    run: RunData, rendered: Sequence[tuple[FigureResult, bytes]], not_measured: Sequence[NotMeasured]
) -> str:
    meta = run.meta
    title = f"seqedit report: {meta.name}"
    parts = [
        f"<h1>{esc(meta.name)}</h1>",
        f'<p class="sub">{esc(_subtitle(run))}</p>',
        *_banners(run),
        "<h2>Run and key numbers</h2>",
        _key_number_grid(run),
        _summary_section(run),
        _protocol_section(run),
        _not_measured_section(run, not_measured),
        _contents(rendered),
        "<h2>Figures</h2>",
        *(figure_html(result, png, i + 1) for i, (result, png) in enumerate(rendered)),
        _details_section(run),
        f"<footer>Written by seqedit {esc(__version__)} from {esc(str(run.path))}; read from "
        + esc(", ".join(f"{k}: {v.name}" for k, v in sorted(run.sources.items())))
        + ".</footer>",
    ]
    return page_html(title, "\n".join(p for p in parts if p))


def page_html(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(result: FigureResult, png: bytes, number: int, figures_rel: str = "figures") -> str:
    return (
        f'<figure id="{esc(result.key)}">\n'
        f'<img src="{png_data_uri(png)}" alt="{esc(result.title)}">\n'
        f"<figcaption><b>Figure {number}. {esc(result.title)}.</b> {esc(result.caption)} "
        f'<a href="{figures_rel}/{esc(result.key)}.svg">SVG</a> · '
        f'<a href="{figures_rel}/{esc(result.key)}.png">PNG</a></figcaption>\n</figure>'
    )


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{esc(k)}</th><td{_num_class(v)}>{esc(_cell(v))}</td></tr>" for k, v in rows if v is not None
    )
    return f"<table>{body}</table>"


def frame_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td{_num_class(v)}>{esc(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _key_number_grid(run: RunData) -> str:
    """The run header and its key numbers as a row of small tables, one per topic."""
    numbers = key_numbers(run)

    def section(name: str) -> list[KeyNumber]:
        return [n for n in numbers if n.section == name]

    what = "edited" if run.kind == "edit" else "trained"
    blocks = [("Run", kv_table(config_header(run)))]
    if section("norms"):
        norms = kv_table((n.label, n.value) for n in section("norms"))
        blocks.append((f"Norms of the {what} matrices (last step)", norms))
    scores = edit_score_table(run)
    if not scores.empty:
        blocks.append(("Edit metrics (last checkpoint)", frame_table(scores.reset_index(names="metric"))))
    downstream = downstream_table(run)
    if not downstream.empty:
        blocks.append(("Downstream (first → last checkpoint)", frame_table(downstream)))
    if section("train"):
        blocks.append(("Training", kv_table((n.label, n.value) for n in section("train"))))
    if section("cost"):
        blocks.append(("Cost", kv_table((n.label, n.value) for n in section("cost"))))
    cells = "".join(f"<div><h3>{esc(title)}</h3>{body}</div>" for title, body in blocks)
    return f'<div class="grid">{cells}</div>'


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def _num_class(value: Any) -> str:
    return ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""


# ----------------------------------------------------------------------------------------------- sections


def _subtitle(run: RunData) -> str:
    meta = run.meta
    what = f"{meta.method or 'unknown method'} on {meta.model or 'unknown model'}"
    if run.kind == "edit":
        return f"Sequential editing run: {what}" + (f", {meta.dataset}" if meta.dataset else "")
    return f"Post-training intervention run: {what}" + (f", {meta.dataset}" if meta.dataset else "")


def _banners(run: RunData) -> list[str]:
    banners = []
    if run.is_synthetic:
        banners.append(
            '<div class="banner"><b>Synthetic run.</b> These numbers were generated by '
            "the test suite's generator (<code>tests/report/synthetic_run.py</code>) to exercise the report; nothing "
            "here was measured.</div>"
        )
    progress = run.progress
    if progress.status != "finished":
        message = f" Message: {esc(progress.message)}" if progress.message else ""
        banners.append(
            f'<div class="banner"><b>This run is {esc(progress.status)}</b> '
            f"({progress.completed_steps} steps completed, {progress.n_edits} edits).{message}</div>"
        )
    return banners


def config_header(run: RunData) -> list[tuple[str, Any]]:
    meta = run.meta
    rows: list[tuple[str, Any]] = [
        ("kind", run.kind),
        ("model", meta.model),
        ("method", meta.method),
        ("dataset", meta.dataset),
    ]
    if run.kind == "edit":
        rows += [("number of edits (configured)", meta.n_edits), ("batch size (edits per step)", meta.batch_size)]
    else:
        rows.append(("batch size", meta.batch_size))
    rows += [
        ("status", run.progress.status),
        ("completed steps", run.progress.completed_steps),
        ("run directory", str(run.path)),
    ]
    return rows


def _summary_section(run: RunData) -> str:
    if not run.summary:
        return ""
    flat = _flatten(run.summary)
    return "<h2>summary.json</h2>" + kv_table(flat.items())


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def protocol_table(run: RunData) -> pd.DataFrame:
    """What was measured, with which definition, when, and on which edits (one row per metric and scope)."""
    rows = []
    checkpoints = run.checkpoints
    x = run.x_column
    for (group, name, scope, definition), frame in checkpoints.groupby(
        ["group", "name", "scope", "definition"], sort=False
    ):
        xs = sorted({int(v) for v in frame[x].dropna()})
        layers = sorted({int(v) for v in frame["layer"].dropna()})
        rows.append(
            {
                "group": group,
                "metric": name,
                "definition": definition or "–",
                "scope (evaluated on)": _scope_meaning(group, name, scope),
                f"measured at ({run.x_label})": _compress(xs),
                "layers": describe_layers(layers) if layers else "–",
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    order = table["group"].map(lambda g: rank.get(g, len(rank)))
    return table.assign(_rank=order).sort_values(["_rank", "metric"], kind="stable").drop(columns="_rank")


def _scope_meaning(group: str, name: str, scope: str) -> str:
    if not scope:
        return "–"
    if group == "edit":
        meaning = SCOPE_MEANINGS.get(scope)
        return f"{scope}: {meaning}" if meaning else scope
    if group == "downstream":
        return f"{scope} (corpus)" if name == "perplexity" else f"{scope} (task)"
    if group == "activation":
        return f"{scope} (site)"
    if group == "profile":
        return f"{scope} (matrix kind)"
    return scope


def _compress(values: Sequence[int]) -> str:
    if not values:
        return "–"
    if len(values) <= 10:
        return ", ".join(str(v) for v in values)
    return f"{', '.join(str(v) for v in values[:4])}, …, {values[-1]} ({len(values)} values)"


def _protocol_section(run: RunData) -> str:
    if run.checkpoints.empty:
        return "<h2>Evaluation protocol</h2><p>No checkpoints were recorded (checkpoints.jsonl is absent or empty).</p>"
    table = protocol_table(run)
    schedule = sorted({int(v) for v in run.checkpoints[run.checkpoints["group"] != "train"][run.x_column].dropna()})
    text = (
        f"<p>Checkpoints at {esc(run.x_label)}: {esc(_compress(schedule))}. Each row is one recorded metric: the "
        "definition the evaluator used, the set it was evaluated on (<i>scope</i>) and when it was measured.</p>"
    )
    return "<h2>Evaluation protocol</h2>" + text + frame_table(table)


def _not_measured_section(run: RunData, not_measured: Sequence[NotMeasured]) -> str:
    items = [f"<li><b>{esc(n.title)}</b>: {esc(n.reason)}.</li>" for n in not_measured]
    optional = {rundir.jsonl(rundir.REQUESTS): "per-request editor statistics", rundir.ENVIRONMENT: "environment",
                rundir.SUMMARY: rundir.SUMMARY, rundir.jsonl(rundir.TIMINGS): "timings",
                rundir.jsonl(rundir.CHECKPOINTS): "checkpoints"}
    for file in run.missing:
        if run.kind == "intervention" and file == rundir.jsonl(rundir.REQUESTS):
            continue
        items.append(f"<li><b>{esc(optional.get(file, file))}</b>: {esc(file)} is not in the run directory.</li>")
    if not items:
        return ""
    return "<h2>Not measured in this run</h2><ul class=\"missing\">" + "".join(items) + "</ul>"


def _contents(rendered: Sequence[tuple[FigureResult, bytes]]) -> str:
    links = "".join(f'<li><a href="#{esc(r.key)}">{esc(r.title)}</a></li>' for r, _ in rendered)
    return f"<nav><h2>Contents</h2><ol>{links}</ol></nav>" if links else ""


def _details_section(run: RunData) -> str:
    parts = ["<h2>Configuration and environment</h2>"]
    config_text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
    parts.append(f"<details><summary>config.yaml</summary><pre>{esc(config_text)}</pre></details>")
    if run.environment:
        env_text = json.dumps(run.environment, indent=2, default=str)
        parts.append(f"<details><summary>environment.json</summary><pre>{esc(env_text)}</pre></details>")
    return "\n".join(parts)

