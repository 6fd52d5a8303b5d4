"""``seqedit export RUN_DIR OUT_DIR`` and ``seqedit apply DELTAS BASE_MODEL OUT_DIR``: edited models as
Hugging Face directories that ``AutoModelForCausalLM.from_pretrained`` loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `seqedit run` (with its ledger).")],
    out_dir: Annotated[Path, typer.Argument(help="Where the Hugging Face model directory is written.")],
    step: Annotated[int | None, typer.Option("--step", min=0, help="The model after this step (default: the last completed one).")] = None,
) -> None:
    """Write a run's edited model (safetensors, config, tokenizer) as a Hugging Face directory."""
    from seqedit.models import ModelLoadError
    from seqedit.runner.export import export_run
    from seqedit.runner.store import RunDirectoryError

    console = Console(stderr=True)
    try:
        out = export_run(run_dir, out_dir, step=step)
    except (ValueError, OSError, ModelLoadError, RunDirectoryError) as exc:  # ConfigError is a ValueError
        raise _fail(console, str(exc)) from exc
    Console().print(f"Edited model: {out.resolve()}")


def apply_command(
    deltas: Annotated[Path, typer.Argument(help="A run directory (its ledger) or a saved EditResult (.safetensors).")],
    base_model: Annotated[str, typer.Argument(help="Embedded name, hub id or local directory of the base model.")],
    out_dir: Annotated[Path, typer.Argument(help="Where the Hugging Face model directory is written.")],
    step: Annotated[int | None, typer.Option("--step", min=0, help="For a run directory: its deltas up to this step.")] = None,
) -> None:
    """Add a run's (or an EditResult's) weight deltas to a base model and save it as a Hugging Face directory."""
    from seqedit.models import ModelLoadError
    from seqedit.runner.export import apply_to_model
    from seqedit.runner.store import RunDirectoryError

    console = Console(stderr=True)
    try:
        out = apply_to_model(deltas, base_model, out_dir, step=step)
    except (ValueError, OSError, ModelLoadError, RunDirectoryError) as exc:
        raise _fail(console, str(exc)) from exc
    Console().print(f"Edited model: {out.resolve()}")
