"""``seqedit sweep``: one base config, a grid of overrides, one run per combination, then a comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def sweep_command(
    config: Annotated[Path | None, typer.Argument(help="Base YAML run config.")] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", "-g", help="key=v1,v2 (or key=[v1, v2]); repeat for more axes."),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override of the base config.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory holding one run per grid point.")] = Path(
        "runs/sweep"
    ),
    backend: Annotated[str, typer.Option(help="local (one after another) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    gpus_per_run: Annotated[float, typer.Option(help="GPUs each run reserves on Ray.")] = 0.0,
    cpus_per_run: Annotated[float, typer.Option(help="CPUs each run reserves on Ray.")] = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs without starting them.")] = False,
    threads: Annotated[
        int, typer.Option(min=0, help="torch CPU threads per run (0: torch's default); in each environment.json.")
    ] = 0,
) -> None:
    """Run a grid of experiments (resuming any that exist) and compare them."""
    from seqedit.runner.config import ConfigError, load_config
    from seqedit.runner.sweep import expand, parse_grid, run_sweep

    console = Console()
    try:
        base = load_config(config, list(set_ or []))
        points = expand(base, parse_grid(list(grid or [])), out)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    table = Table(title=f"{len(points)} runs under {out}")
    table.add_column("run")
    table.add_column("method")
    table.add_column("edits", justify="right")
    for point in points:
        table.add_row(point.label, point.config.method, str(point.config.num_edits))
    console.print(table)
    if dry_run:
        return
    outcomes = run_sweep(points, backend=backend, ray_address=ray_address,  # type: ignore[arg-type]
                         cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, threads=threads)
    for point, outcome in zip(points, outcomes, strict=True):
        console.print(f"{point.label}: {outcome['status']} ({outcome['n_edits']} edits)")
    finished = [Path(o["run_dir"]) for o in outcomes if o["status"] in {"finished", "failed"}]
    if len(finished) >= 2:
        from seqedit.report import write_comparison

        console.print(f"comparison: {write_comparison(finished, out / 'comparison')}")
