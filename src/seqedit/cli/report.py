"""CLI commands ``seqedit report RUN_DIR`` and ``seqedit compare RUN_DIR...``.

The main app registers them with :func:`register` (or by adding :func:`report` and :func:`compare` as
commands itself).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


class XScaleChoice(StrEnum):
    auto = "auto"
    linear = "linear"
    log = "log"


XScaleOption = Annotated[
    XScaleChoice,
    typer.Option("--xscale", help="x axis of the curves: 'auto' is logarithmic when checkpoints are log-spaced."),
]


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `seqedit run`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory (default: RUN_DIR/report).")
    ] = None,
    xscale: XScaleOption = XScaleChoice.auto,
) -> None:
    """Write a self-contained HTML report with PNG and SVG figures for one run."""
    from seqedit.report.html import write_report

    console = Console()
    try:
        index = write_report(run_dir, out, xscale=xscale.value)
    except ValueError as exc:  # RunDirectoryError is a ValueError
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(f"Report: {index}")
    console.print(f"Figures: {index.parent / 'figures'}")


def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Two or more run directories to overlay.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("comparison"),
    xscale: XScaleOption = XScaleChoice.auto,
) -> None:
    """Overlay several runs on shared axes and write a summary table (HTML, CSV, Markdown)."""
    from seqedit.report.compare import write_comparison

    console = Console()
    try:
        index = write_comparison(run_dirs, out, xscale=xscale.value)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    print_summary(console, index.parent / "summary.md")
    console.print(f"Comparison: {index}")
    console.print(f"Table: {index.parent / 'summary.csv'} and {index.parent / 'summary.md'}")


def print_summary(console: Console, markdown_file: Path) -> None:
    """The summary table as a rich table: one row per run when it fits the terminal, else transposed
    (one column per run)."""
    text = markdown_file.read_text(encoding="utf-8")
    rows = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in text.splitlines() if line]
    header, body = rows[0], rows[2:]
    widths = [max(len(r[i]) for r in [header, *body]) + 3 for i in range(len(header))]
    table = Table(show_header=True, header_style="bold")
    if sum(widths) <= console.width:
        table.add_column(header[0], no_wrap=True)
        for name in header[1:]:
            table.add_column(name, justify="right")
        for row in body:
            table.add_row(*row)
    else:
        table.add_column(header[0], no_wrap=True)
        for row in body:
            table.add_column(row[0], justify="right", overflow="fold")
        for i, name in enumerate(header[1:], start=1):
            table.add_row(name, *(row[i] for row in body))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``report`` and ``compare`` commands to ``app``."""
    app.command("report")(report)
    app.command("compare")(compare)
