"""``seqedit``: command-line entry point. Heavy modules are imported inside commands so --help is fast."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from seqedit.errors import USER_ERROR_EXIT_CODE, UserError, one_line

DEBUG_FLAG = "--debug"
DEBUG_ENV = "SEQEDIT_DEBUG"


class _ErrorBoundary(TyperGroup):
    """The one place bad input is reported: a :class:`~seqedit.errors.UserError` raised anywhere below prints
    one line and exits with status 2 (its traceback only with ``--debug``, anywhere on the command line, or
    SEQEDIT_DEBUG=1); anything else is a bug and keeps its traceback."""

    debug: bool = False

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        given = list(sys.argv[1:] if args is None else args)
        _ErrorBoundary.debug = DEBUG_FLAG in given or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        return super().main([a for a in given if a != DEBUG_FLAG], *rest, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            user_error = _user_error(exc)
            if user_error is None:
                raise
            if _ErrorBoundary.debug:
                traceback.print_exc()
            print(f"seqedit: error: {one_line(str(user_error))}", file=sys.stderr)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    name="seqedit",
    help="Localized sequential knowledge editing of language models, with the damage made visible. "
    "Input errors print one line (exit status 2); add --debug anywhere to see their traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _terminal(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (results and errors only).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show every warning and library log, with its source.")] = False,
) -> None:
    """Localized sequential knowledge editing of language models, with the damage made visible."""
    from seqedit.cli.terminal import setup_terminal

    setup_terminal(quiet=quiet, verbose=verbose)


def _console() -> Console:
    return Console()


@app.command("models")
def models_command() -> None:
    """List the embedded models and the architecture adapters (families) seqedit supports."""
    from seqedit.models.adapters import ADAPTERS
    from seqedit.models.embedded import EMBEDDED_MODELS, is_installed

    console = _console()
    table = Table(title="Embedded models (offline; GGUF dequantised once and cached as safetensors)")
    for col in ("name", "installed", "description", "licence", "install"):
        table.add_column(col)
    for entry in EMBEDDED_MODELS.values():
        installed = "yes" if is_installed(entry) else "no"
        note = " (opt-in)" if entry.opt_in else ""
        table.add_row(entry.name, installed, entry.description + note, entry.licence, entry.pip_install)
    console.print(table)
    families = Table(title="Architecture adapters (any Hugging Face causal LM of these families)")
    for col in ("family", "model_type", "edited matrix", "examples"):
        families.add_column(col)
    for cls in ADAPTERS:
        families.add_row(cls.family, ", ".join(cls.model_types), cls.mlp_out_name, ", ".join(cls.example_models))
    console.print(families)


@app.command("predict")
def predict_command(
    prompt: Annotated[str, typer.Argument(help="Text to continue.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Embedded name, hub id or local directory.")] = "smollm2-135m",
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many next tokens to show.")] = 5,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
) -> None:
    """Show the model's top-k next tokens with their probabilities."""
    import torch

    from seqedit.models import ModelLoadError, load

    try:
        lm = load(model, device=device, dtype=dtype)
    except ModelLoadError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc
    batch = lm.tokenizer(prompt, return_tensors="pt").to(lm.device)
    with torch.no_grad():
        probs = lm.model(**batch).logits[0, -1].float().softmax(-1)
    values, indices = probs.topk(top_k)
    table = Table(title=f"{lm.name}: next token after {prompt!r}")
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    for rank, (p, idx) in enumerate(zip(values.tolist(), indices.tolist(), strict=True), start=1):
        table.add_row(str(rank), repr(lm.tokenizer.decode([idx])), f"{p:.4f}")
    _console().print(table)


@app.command("datasets")
def datasets_command(
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Data directory (default: $SEQEDIT_DATA_DIR).")
    ] = None,
    download: Annotated[
        list[str] | None, typer.Option("--download", help="Download this dataset into the data directory.")
    ] = None,
) -> None:
    """Show which datasets are found where, with record counts (and download missing ones)."""
    from pathlib import Path

    from seqedit.data import describe_datasets, download_dataset
    from seqedit.settings import get_settings

    console = _console()
    root = Path(data_dir) if data_dir else get_settings().data_dir
    for name in download or []:
        if root is None:
            raise typer.BadParameter("set --data-dir or SEQEDIT_DATA_DIR to download into", param_hint="--download")
        console.print(f"downloaded {name} -> {download_dataset(name, root)}")
    table = Table(title=f"Datasets (data directory: {root or 'not set; only the built-in facts'})")
    for col in ("name", "kind", "found", "records", "path / download"):
        table.add_column(col)
    for info in describe_datasets(root):
        found = "[green]yes[/green]" if info.found else "[red]no[/red]"
        where = str(info.path) if info.found else f"{info.path or '-'}\n{info.url or ''}"
        table.add_row(info.name, info.kind, found, "" if info.records is None else str(info.records), where)
    console.print(table)


@app.command("methods")
def methods_command(
    method: Annotated[str | None, typer.Argument(help="Show every default setting of this method.")] = None,
) -> None:
    """List the registered editing methods, or one method's default settings per profile, with sources."""
    from seqedit.editors.registry import describe_methods

    console = _console()
    described = describe_methods()
    if method is None:
        table = Table(title="Editing methods (`seqedit methods NAME` shows the defaults per profile)")
        for col in ("name", "batch mode", "description"):
            table.add_column(col)
        for name, entry in described.items():
            table.add_row(name, str(entry["batch_mode"]), entry["description"])
        console.print(table)
        from seqedit.editors.registry import describe_stabilisers

        options = Table(title="Stabilisers: options of rome, memit, emmet, alphaedit and encore (docs/editors.md)")
        for col in ("setting", "default", "description"):
            options.add_column(col)
        for name, option in describe_stabilisers().items():
            options.add_row(name, str(option["default"]), option["description"])
        console.print(options)
        return
    if method not in described:
        raise typer.BadParameter(f"unknown method; choose one of {', '.join(described)}", param_hint="METHOD")
    entry = described[method]
    console.print(methods_table(method, entry))
    legend = source_legend(entry)
    for number, source in legend.items():
        console.print(f"[{number}] {source}", markup=False, highlight=False)
    console.print("unmarked: the method's class default (its field description says where it comes from); "
                  "a run chooses a profile with `profile:` (default: found from the model).")


def source_legend(entry: dict) -> dict[int, str]:
    """Footnote number of every distinct source of a profile value."""
    sources = dict.fromkeys(s for per_profile in entry.get("sources", {}).values() for s in per_profile.values())
    return {i: source for i, source in enumerate(sources, start=1)}


def methods_table(method: str, entry: dict) -> Table:
    """One row per setting, one column per profile; a value a profile sets is marked with its source."""
    number_of = {source: number for number, source in source_legend(entry).items()}
    profiles = list(entry["defaults"])
    table = Table(title=f"{method}: {entry['description']} (batch mode: {entry['batch_mode']})")
    table.add_column("setting", no_wrap=True)
    for profile in profiles:
        table.add_column(profile)
    fields = sorted({f for values in entry["defaults"].values() for f in values})
    for field in fields:
        cells = []
        for profile in profiles:
            value = str(entry["defaults"][profile].get(field, ""))
            source = entry.get("sources", {}).get(profile, {}).get(field)
            cells.append(f"{value} [{number_of[source]}]" if source else value)
        table.add_row(field, *cells)
    return table


def _register_subcommands() -> None:
    from seqedit.cli import intervene, mend
    from seqedit.cli import report as report_cli
    from seqedit.cli.demo import demo_command
    from seqedit.cli.export import apply_command, export_command
    from seqedit.cli.run import run_command
    from seqedit.cli.study import study_command
    from seqedit.cli.sweep import sweep_command

    app.command("demo")(demo_command)
    app.command("run")(run_command)
    app.command("sweep")(sweep_command)
    app.command("study")(study_command)
    app.command("export")(export_command)
    app.command("apply")(apply_command)
    report_cli.register(app)
    app.add_typer(mend.app, name="mend")
    app.add_typer(intervene.app, name="intervene")


_register_subcommands()

def _user_error(exc: BaseException) -> UserError | None:
    """The user error behind ``exc`` (itself, or what it was raised from), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (2 for bad input; see :class:`_ErrorBoundary`)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(list(sys.argv[1:] if argv is None else argv), prog_name="seqedit",
                              standalone_mode=False)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except TyperException as exc:  # usage errors: click's own message, status 2
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
