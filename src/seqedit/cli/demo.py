"""``seqedit demo``: the main job. Sequential editing of the embedded model with MEMIT and with ENCORE
on the same facts, then per-run reports and a side-by-side comparison. Runs offline on a laptop CPU."""

from __future__ import annotations

import json
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


def _found_datasets() -> set[str]:
    from seqedit.data import describe_datasets

    return {info.name for info in describe_datasets() if info.found}


def demo_dataset(found: set[str] | None = None) -> str:
    """CounterFact when the research data is configured, else the built-in facts (``found``: the datasets
    found, when the caller has them already)."""
    return "counterfact" if "counterfact" in (found if found is not None else _found_datasets()) else "builtin"


def demo_statistics_corpus(found: set[str] | None = None) -> str:
    """WikiText-2 (test split) when the research data is configured, else the built-in English prose. Chosen
    here, and printed, so a first run without data states its corpus instead of warning about a fallback."""
    return "wikitext2" if "wikitext2-test" in (found if found is not None else _found_datasets()) else "builtin-prose"


def _default_statistics_corpus(method: str) -> str | None:
    """The method's default key-statistics corpus; None for a method without key statistics."""
    from seqedit.editors.registry import editor_class

    field = editor_class(method).config_class.model_fields.get("mom2_corpus")
    return None if field is None else str(field.default)


def demo_config_data(
    method: str, size: DemoSize, model: str, dataset: str, out: Path, corpus: str | None = None
) -> dict[str, Any]:
    hparams = dict(size.hparams)
    default = _default_statistics_corpus(method)
    if corpus is not None and default is not None and corpus != default:  # configs with data stay as they were
        hparams["mom2_corpus"] = corpus
    return {
        "name": method,
        "model": model,
        "method": method,
        "hparams": hparams,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show every warning and library log.")] = False,
) -> None:
    """Edit the embedded model in sequence with MEMIT and ENCORE, then write reports and a comparison."""
    from seqedit.cli.report import print_summary
    from seqedit.cli.terminal import setup_terminal
    from seqedit.report import write_comparison, write_report
    from seqedit.runner.config import RunConfig
    from seqedit.runner.run import run_experiment
    from seqedit.runner.store import RunStore

    setup_terminal(quiet=quiet, verbose=verbose)
    console = Console()
    size = QUICK if quick else FULL
    if num_edits is not None:
        size = DemoSize(num_edits, min(size.batch_size, num_edits), size.checkpoint_every, size.evaluation,
                        size.probe, size.hparams)
    out = output_dir / ("quick" if quick else "full")
    found = _found_datasets()  # counts every dataset's records: once
    dataset, corpus = demo_dataset(found), demo_statistics_corpus(found)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    console.print(
        f"[bold]seqedit demo[/bold]: {size.num_edits} sequential edits of {model} in batches of {size.batch_size}, "
        f"facts from '{dataset}', key statistics from '{corpus}', methods {', '.join(chosen)} -> {out}"
    )
    run_dirs = []
    summaries: dict[str, dict[str, Any]] = {}
    for method in chosen:
        config = RunConfig.model_validate(demo_config_data(method, size, model, dataset, out, corpus))
        store = RunStore(config.output_dir)
        resume = store.exists() and store.read_progress()["status"] != "failed"
        console.print(f"\n[bold]{method}[/bold]" + (" (resuming)" if resume else ""))
        outcome = run_experiment(config, resume=resume, show_progress=not quiet)
        summary_file = outcome.run_dir / "summary.json"  # also there when an already finished run is reused
        summaries[method] = outcome.summary or (
            json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else {}
        )
        console.print(f"{method}: {outcome.status} after {outcome.n_edits} edits")
        if outcome.completed_steps:
            report = write_report(outcome.run_dir)
            console.print(f"  report: {report}")
            run_dirs.append(outcome.run_dir)
    if len(run_dirs) >= 2:
        comparison = write_comparison(run_dirs, out / "comparison")
        console.print()
        print_summary(console, out / "comparison" / "summary.md")
        line = encore_trade_off(summaries, out)
        if line:
            console.print(line, highlight=False)
        console.print(f"[green]Comparison report:[/green] {comparison.resolve()}")


def _final(summary: dict[str, Any], key: str) -> float | None:
    if key.startswith("norms/"):
        value = summary.get("norms", {}).get(key.removeprefix("norms/"))
    else:
        value = summary.get("metrics", {}).get(key, {}).get("final")
    return None if value is None else float(value)


def encore_trade_off(summaries: dict[str, dict[str, Any]], out: Path) -> str | None:
    """One line under the table: ENCORE's efficacy and norm growth against MEMIT's, with its λ_n, taken
    from the two runs just made (nothing is tuned for the demo)."""
    if not {"memit", "encore"} <= summaries.keys():
        return None
    memit, encore = summaries["memit"], summaries["encore"]
    efficacy = [_final(s, "edit/efficacy_score/all") for s in (encore, memit)]
    distance = [_final(s, "norms/changed_dist_from_init_mean") for s in (encore, memit)]
    if None in efficacy or None in distance:
        return None
    norm_lambda = _norm_lambda(out / "encore")
    lam = f"λ_n = {norm_lambda:g}" if norm_lambda is not None else "its λ_n"
    return (
        f"ENCORE ({lam}) trades efficacy for a smaller update: efficacy {efficacy[0]:.2f} vs MEMIT's "
        f"{efficacy[1]:.2f} on all facts so far, ‖W−W₀‖ {distance[0]:.2f} vs {distance[1]:.2f} per edited matrix; "
        "a smaller hparams.norm_lambda buys efficacy with more growth."
    )


def _norm_lambda(run_dir: Path) -> float | None:
    """ENCORE's λ_n as the editor used it (its resolved config, recorded with the first step's result)."""
    from seqedit.runner.store import RunStore

    try:
        config = RunStore(run_dir).load_ledger(1).info.get("config", {})
    except (OSError, RuntimeError, ValueError):
        return None
    value = config.get("norm_lambda")
    return None if value is None else float(value)
