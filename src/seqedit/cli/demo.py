"""``seqedit demo``: the main job. Sequential editing of the embedded model with MEMIT and with ENCORE
on the same facts, then per-run reports and a side-by-side comparison. Runs offline on a laptop CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

DEFAULT_METHODS = ("memit", "encore")


@dataclass(frozen=True)
class DemoSize:
    num_edits: int
    batch_size: int
    checkpoint_every: int
    evaluation: dict[str, Any]
    probe: dict[str, Any]
    hparams: dict[str, Any]


# Sizes measured on one thread of a shared 2-core CPU (see README): the full demo in 9.5 minutes (11.5 from an
# empty cache), --quick in about 70 s (3.6 minutes from an empty cache).
FULL = DemoSize(
    num_edits=50,
    batch_size=10,
    checkpoint_every=10,
    evaluation={"retention": "all", "perplexity_tokens": 2048, "downstream_tasks": ["sst2"],
                "downstream_examples": 40, "downstream_shots": 3},
    probe={"texts": 12, "prompts": 12, "max_tokens": 48, "pca_k": 8},
    hparams={},
)
QUICK = DemoSize(
    num_edits=6,
    batch_size=3,
    checkpoint_every=3,
    evaluation={"retention": "all", "perplexity": False, "downstream_tasks": []},
    probe={"texts": 6, "prompts": 6, "max_tokens": 32, "pca_k": 4, "layers": [2, 4, 6, 8, 12, 20, 29]},
    hparams={"mom2_n_samples": 64, "v_num_grad_steps": 12, "context_count": 2},
)


def demo_dataset() -> str:
    """CounterFact when the research data is configured, else the built-in facts."""
    from seqedit.data import describe_datasets

    found = {info.name for info in describe_datasets() if info.found}
    return "counterfact" if "counterfact" in found else "builtin"


def demo_config_data(method: str, size: DemoSize, model: str, dataset: str, out: Path) -> dict[str, Any]:
    return {
        "name": method,
        "model": model,
        "method": method,
        "hparams": dict(size.hparams),
        "dataset": {"name": dataset},
        "num_edits": size.num_edits,
        "batch_size": size.batch_size,
        "order_seed": 0,
        "checkpoints": {"every": size.checkpoint_every},
        "track": {"groups": ["all"]},
        "probe": dict(size.probe),
        "evaluation": dict(size.evaluation),
        "output_dir": str(out / method),
    }


def demo_command(
    quick: Annotated[bool, typer.Option("--quick", help="A short version (6 edits, fewer measurements, lighter settings): about a minute once the model is cached.")] = False,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where the runs and reports go.")] = Path(
        "runs/demo"
    ),
    model: Annotated[str, typer.Option("--model", "-m", help="Model to edit.")] = "smollm2-135m",
    methods: Annotated[str, typer.Option(help="Comma-separated methods to compare.")] = ",".join(DEFAULT_METHODS),
    num_edits: Annotated[int | None, typer.Option(help="Override the number of edits.")] = None,
) -> None:
    """Edit the embedded model in sequence with MEMIT and ENCORE, then write reports and a comparison."""
    from seqedit.report import write_comparison, write_report
    from seqedit.runner.config import RunConfig
    from seqedit.runner.run import run_experiment
    from seqedit.runner.store import RunStore

    console = Console()
    size = QUICK if quick else FULL
    if num_edits is not None:
        size = DemoSize(num_edits, min(size.batch_size, num_edits), size.checkpoint_every, size.evaluation,
                        size.probe, size.hparams)
    out = output_dir / ("quick" if quick else "full")
    dataset = demo_dataset()
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    console.print(
        f"[bold]seqedit demo[/bold]: {size.num_edits} sequential edits of {model} in batches of {size.batch_size}, "
        f"facts from '{dataset}', methods {', '.join(chosen)} -> {out}"
    )
    run_dirs = []
    for method in chosen:
        config = RunConfig.model_validate(demo_config_data(method, size, model, dataset, out))
        store = RunStore(config.output_dir)
        resume = store.exists() and store.read_progress()["status"] != "failed"
        console.print(f"\n[bold]{method}[/bold]" + (" (resuming)" if resume else ""))
        outcome = run_experiment(config, resume=resume)
        console.print(f"{method}: {outcome.status} after {outcome.n_edits} edits")
        if outcome.completed_steps:
            report = write_report(outcome.run_dir)
            console.print(f"  report: {report}")
            run_dirs.append(outcome.run_dir)
    if len(run_dirs) >= 2:
        comparison = write_comparison(run_dirs, out / "comparison")
        summary = (out / "comparison" / "summary.md").read_text(encoding="utf-8")
        console.print("\n" + summary, markup=False, highlight=False)
        console.print(f"[green]Comparison report:[/green] {comparison.resolve()}")
