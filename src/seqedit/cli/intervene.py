"""``seqedit intervene``: continued pre-training, full fine-tuning or LoRA for a set number of steps,
recording the Frobenius norm of every weight matrix (and the loss) in a run directory.

Registered in the main CLI as ``app.add_typer(intervene.app, name="intervene")``; the sub-app runs its
callback directly, so the command line is ``seqedit intervene --kind lora ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seqedit.cli.options import build_config, config_options, config_values
from seqedit.intervene.config import InterventionConfig

app = typer.Typer(
    name="intervene", add_completion=False, pretty_exceptions_show_locals=False,
    help="Train a model (continued pre-training, fine-tuning, LoRA) and record how its weight norms grow.",
)


def growth_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['kind']} on {summary['data']}: {summary['steps']} steps, lr {summary['lr']:g}")
    table.add_column("matrix kind", no_wrap=True, min_width=13)
    for column in ("n", "‖W‖ start", "‖W‖ end", "growth", "max rel", "‖W−W0‖"):
        table.add_column(column, justify="right")
    for row in summary["growth"]:
        table.add_row(
            row["kind"], str(row["matrices"]), f"{row['fro_start']:.3f}", f"{row['fro_end']:.3f}",
            f"{100 * row['growth']:+.4f}%", f"{row['fro_rel_max']:.5f}", f"{row['dist_from_init']:.4f}",
        )
    return table


def _recorded_config(run_dir: Path) -> InterventionConfig:
    """The settings an intervention recorded in its run directory (``config.yaml``)."""
    import yaml

    from seqedit.runner.store import RunDirectoryError, RunStore

    store = RunStore(run_dir)
    store.read_progress()  # not a run directory: one clear line
    fields = yaml.safe_load(store.config_path.read_text(encoding="utf-8"))
    if not isinstance(fields, dict):
        raise RunDirectoryError(f"{store.config_path}: expected a mapping of intervention settings")
    return build_config(InterventionConfig, {**fields, "output_dir": str(run_dir)}, FLAGS)


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


# The run directory is --output/-o on the command line (output_dir in the config and its YAML files).
FLAGS = {"model": ["--model", "-m"], "output_dir": ["--output", "-o"]}


@app.callback(invoke_without_command=True)
@config_options(InterventionConfig, flags=FLAGS)
def intervene_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML file with InterventionConfig fields; options given here win.")] = None,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default).")] = 0,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the interrupted intervention in this run directory from its newest saved state, with "
        "the settings it recorded (no other settings may be given).")] = None,
    **settings: Any,
) -> None:
    """Run one intervention and print how the norms of each matrix kind changed. Every setting of the
    intervention config is an option; a YAML --config sets them too, options given here win."""
    import torch
    import yaml

    from seqedit.intervene import run_intervention

    given = {name: value for name, value in settings.items() if _given_on_command_line(ctx, name)}
    fields = yaml.safe_load(config.read_text(encoding="utf-8")) if config else {}
    if not isinstance(fields, dict):
        raise typer.BadParameter(f"{config} must hold a mapping of settings", param_hint="--config")
    if threads:
        torch.set_num_threads(threads)
    if resume is not None:
        if given or config:
            raise typer.BadParameter("a resumed intervention keeps its recorded settings; give --resume alone",
                                     param_hint="--resume")
        cfg = _recorded_config(resume)
    else:
        cfg = build_config(InterventionConfig, {**fields, **config_values(InterventionConfig, given, FLAGS)}, FLAGS)
    summary = run_intervention(cfg, resume=resume is not None)
    console = Console()
    console.print(growth_table(summary))
    console.print(
        f"loss: train {summary['train_loss_first']:.3f} -> {summary['train_loss_last']:.3f}, held-out "
        f"{summary['eval_loss_start']:.3f} -> {summary['eval_loss_end']:.3f}; run directory {cfg.output_dir}"
    )
