"""``seqedit study``: run (or continue) every run of a study file, then compare them and write the findings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _runs_table(title: str, rows: list[tuple[str, str, str, str]]) -> Table:
    table = Table(title=title)
    for column, justify in (("run", "left"), ("kind", "left"), ("done", "right"), ("state", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    return table


def study_command(
    study_file: Annotated[Path, typer.Argument(help="Study YAML (name, output_dir, defaults, runs).")],
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Runs at once (local processes).")] = 1,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Torch threads per run.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these runs (repeat).")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Replaces the study's output_dir.")] = None,
    backend: Annotated[str, typer.Option(help="local (processes on this machine) or ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    collect: Annotated[
        Path | None, typer.Option(help="Also copy each run's compact results (Parquet tables, settings, summary) here.")
    ] = None,
    no_run: Annotated[bool, typer.Option("--no-run", help="Do not start or continue runs; only report on what exists.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and their state, start nothing.")] = False,
) -> None:
    """Run a study: a named set of runs sharing facts, probes and statistics; then the comparison and findings."""
    from seqedit.runner.config import ConfigError, RunConfig
    from seqedit.runner.store import RunStore
    from seqedit.runner.study import (
        StudyRun,
        collect_results,
        load_study,
        refresh_spectra,
        run_progress,
        run_state,
        run_study,
        study_runs,
    )

    console = Console()
    try:
        study = load_study(study_file, output_dir)
        runs = study_runs(study, only)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc

    states = {r.name: run_state(r) for r in runs}  # reads progress.json and probes the lock: once per run

    def row(run: StudyRun) -> tuple[str, str, str, str]:
        # An edit run is named by its method, an intervention by its kind; a running run names its process.
        label = run.config.method if isinstance(run.config, RunConfig) else run.kind
        state = states[run.name]
        holder = RunStore(run.run_dir).holder() if state == "running" else None
        who = holder.split(" since ")[0] if holder else None  # "pid N on host"
        return run.name, label, run_progress(run), f"{state} ({who})" if who else state

    console.print(_runs_table(f"study {study.name}: {len(runs)} runs under {study.output_dir}",
                              [row(r) for r in runs]))
    stopped = [r.name for r in runs if states[r.name] == "stopped"]
    if stopped and dry_run:
        console.print(f"stopped before the end (re-run without --dry-run to continue): {', '.join(stopped)}")
    if dry_run:
        return
    if not no_run:
        def report(run: object, outcome: dict) -> None:
            colour = {"finished": "green", "failed": "red"}.get(outcome["status"], "yellow")
            console.print(f"[{colour}]{run.name}: {outcome['status']}[/{colour}] {outcome.get('message', '')}")  # type: ignore[attr-defined]

        run_study(runs, workers=workers, backend=backend, threads=threads,  # type: ignore[arg-type]
                  log_dir=study.output_dir / "_logs", ray_address=ray_address, on_done=report)
    for run in runs:  # singular spectra at checkpoints, rebuilt from each editing run's ledger
        if refresh_spectra(run) is not None:
            console.print(f"spectra of {run.name} at its checkpoints: {run.run_dir / 'spectra.jsonl'}")
    if collect is not None:
        for run in runs:
            folder = collect_results(run, collect)
            if folder is not None:
                console.print(f"collected {run.name} -> {folder}")
    from seqedit.report.findings import write_findings

    page = write_findings([r.run_dir for r in runs if r.run_dir.exists()], study.output_dir / "_findings",
                          title=f"Findings of study {study.name}")
    console.print(f"findings: {page}")
