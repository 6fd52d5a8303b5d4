"""``seqedit run``: a sequential editing experiment from a YAML config (or resume one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def summary_table(summary: dict, title: str) -> Table:
    """The short end-of-run table: norm growth, edit scores, downstream change, time per edit."""
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("baseline", justify="right")
    table.add_column("final", justify="right")
    norms = summary.get("norms", {})
    if norms.get("changed_fro_rel_mean") is not None:
        table.add_row("edited matrices ‖W‖/‖W₀‖ (mean)", "1.000", f"{norms['changed_fro_rel_mean']:.3f}")
        table.add_row("edited matrices ‖W−W₀‖ (mean)", "0", f"{norms['changed_dist_from_init_mean']:.3f}")
    for key, entry in summary.get("metrics", {}).items():
        base = entry.get("baseline")
        final = entry.get("final")
        table.add_row(key, "" if base is None else f"{base:.3f}", "" if final is None else f"{final:.3f}")
    timing = summary.get("timing", {})
    if timing:
        table.add_row("seconds per edit (key statistics apart)", "", f"{timing['seconds_per_edit']:.2f}")
        if timing.get("statistics_seconds") is not None:
            cached = {True: "read from the cache", False: "computed"}.get(timing.get("statistics_from_cache"), "")
            table.add_row(f"key statistics, one-off seconds ({cached})" if cached else "key statistics, one-off seconds",
                          "", f"{timing['statistics_seconds']:.2f}")
    for criterion, hit in (summary.get("collapse") or {}).items():
        where = "not met" if hit is None else f"step {hit['step']} ({hit['n_edits']} edits)"
        table.add_row(f"collapse: {criterion}", "", where)
    return table


def run_command(
    config: Annotated[Path | None, typer.Argument(help="YAML run config (see --show-config).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override a field: key.subkey=value (YAML value).")
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Resume the run in this directory.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print every field with its default.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (edits, key statistics, weight loading).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show every warning and library log.")] = False,
    threads: Annotated[
        int, typer.Option(min=0, help="torch CPU threads (0: torch's default); recorded in environment.json.")
    ] = 0,
) -> None:
    """Edit a model with many facts in sequence, recording norms, activations, edit and downstream metrics."""
    from seqedit.cli.terminal import setup_terminal
    from seqedit.runner.config import config_reference, load_config
    from seqedit.runner.run import resume_experiment, run_experiment
    from seqedit.runner.store import set_threads

    setup_terminal(quiet=quiet, verbose=verbose)
    console = Console()
    if show_config:
        console.print(config_reference(), markup=False, highlight=False)
        return
    set_threads(threads)
    # Bad input (ConfigError and the other UserErrors) is reported by the CLI boundary (seqedit.cli.main).
    if resume is not None:
        outcome = resume_experiment(resume, show_progress=not quiet, config_path=config, overrides=set_)
    else:
        overrides = list(set_ or [])
        if output_dir is not None:
            overrides.append(f"output_dir={output_dir}")
        outcome = run_experiment(load_config(config, overrides), show_progress=not quiet)
    if outcome.summary:
        console.print(summary_table(outcome.summary, f"{outcome.run_dir}"))
    colour = {"finished": "green", "failed": "red"}.get(outcome.status, "yellow")
    console.print(f"[{colour}]{outcome.status}[/{colour}]: {outcome.completed_steps} steps, {outcome.n_edits} edits "
                  f"-> {outcome.run_dir}")
    if outcome.status == "failed":
        console.print(outcome.message)
        raise typer.Exit(1)
