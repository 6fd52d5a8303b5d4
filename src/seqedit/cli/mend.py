"""``seqedit mend``: train a MEND hypernetwork for a model (then edit with ``method: mend``).

Registered in the main CLI as ``app.add_typer(mend.app, name="mend")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from seqedit.cli.options import build_config, config_options, config_values
from seqedit.editors.mend.train import MendTrainConfig

app = typer.Typer(
    name="mend", help="Train and inspect MEND hypernetworks.", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False,
)


# Settings of MendTrainConfig not offered: save_every follows --eval-every (a checkpoint at every validation).
TRAIN_FLAGS = {"model": ["--model", "-m"]}


@app.command("train")
@config_options(MendTrainConfig, exclude=("save_every",), flags=TRAIN_FLAGS)
def train_command(
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in the output directory.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "cpu",
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default).")] = 0,
    **settings: Any,
) -> None:
    """Train (or resume) MEND on CounterFact for MODEL; shows a progress bar, saves safetensors + JSON.
    Every setting of the training config is an option; --max-minutes 0 means no time limit."""
    import torch

    from seqedit.editors.mend.train import MendTrainer
    from seqedit.models import ModelLoadError, load

    if threads:
        torch.set_num_threads(threads)
    values = config_values(MendTrainConfig, settings, TRAIN_FLAGS)
    values["max_minutes"] = values["max_minutes"] or None
    values["save_every"] = values["eval_every"]
    cfg = build_config(MendTrainConfig, values, TRAIN_FLAGS)
    try:
        lm = load(cfg.model, device=device)
    except ModelLoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc
    console = Console()
    try:
        trainer = MendTrainer(lm, cfg, resume=resume)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"MEND for {lm.name}: editing {', '.join(trainer.hypernet.spec.paths)}; "
                  f"{len(trainer.train_facts)} training facts; checkpoint {trainer.output}")
    summary = trainer.run(progress=True, log=console.print)
    table = Table(title="MEND training")
    table.add_column("key")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("info")
def info_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (mend.json + mend.safetensors).")],
) -> None:
    """Show what a MEND checkpoint edits and how it was trained."""
    from seqedit.editors.mend.hypernet import MendHypernet

    try:
        net = MendHypernet.load(checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = Table(title=f"MEND checkpoint {checkpoint}")
    table.add_column("key")
    table.add_column("value")
    spec = net.spec
    table.add_row("model", spec.model)
    table.add_row("edited", ", ".join(spec.paths))
    table.add_row("rank", str(spec.rank))
    table.add_row("step sizes", ", ".join(f"{v:.3g}" for v in net.edit_lrs.detach().tolist()))
    for key in ("completed_steps", "train_seconds", "train_facts", "lr", "lr_lr", "c_edit", "c_loc"):
        if key in spec.training:
            table.add_row(key, str(spec.training[key]))
    Console().print(table)
