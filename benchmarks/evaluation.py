"""Checkpoint-time cost of every monitor and evaluator on the embedded model, with the values they report.

Times one call of each (norm monitor baseline / per-step update / profile, activation monitor baseline /
measure, edit metrics on the first CounterFact facts, fluency, each downstream task, perplexity) on the
unedited model; the values are the baselines users see at step 0. Also measures the spectral-norm
estimate's error against ``torch.linalg.matrix_norm(ord=2)`` on every tracked matrix.

    SEQEDIT_CACHE_DIR=... SEQEDIT_DATA_DIR=... python benchmarks/evaluation.py [--facts 50] [--examples 100]

Prints a table and writes JSON (``--out``). Needs the research data (SEQEDIT_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from provenance import provenance
from rich.console import Console
from rich.table import Table

from seqedit.data import load_edit_requests, load_text
from seqedit.evaluate import (
    DownstreamConfig,
    DownstreamEvaluator,
    EditEvalConfig,
    FluencyConfig,
    PerplexityConfig,
    PerplexityEvaluator,
    evaluate_edits,
)
from seqedit.evaluate.downstream import DEFAULT_TASKS
from seqedit.models import load
from seqedit.monitor import ActivationMonitor, NormMonitor, build_probe_set
from seqedit.utils.io import write_json_atomic

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def spectral_errors(monitor: NormMonitor) -> dict[str, float]:
    """Relative error of the tracked spectral estimates against the exact largest singular value."""
    errors = []
    for m in monitor.current().matrices:
        w = monitor.adapter.module(m.matrix).weight.detach().double()
        exact = float(torch.linalg.matrix_norm(w, ord=2))
        errors.append((exact - m.spectral) / exact)
    errors_t = torch.tensor(errors)
    return {"max_rel_error": float(errors_t.max()), "median_rel_error": float(errors_t.median()),
            "min_rel_error": float(errors_t.min())}


def norm_section(lm: Any, edited_layers: list[int], rank: int, results: dict[str, Any]) -> None:
    monitor = NormMonitor(lm.adapter, "all")
    _, t_base = timed(monitor.baseline)
    results["norms.baseline"] = {"seconds": t_base, "matrices": len(monitor.matrices), **spectral_errors(monitor)}
    gen = torch.Generator().manual_seed(0)
    deltas = {}
    for layer in edited_layers:  # a MEMIT-like step: low-rank updates of a few down_projs
        info = lm.adapter.matrices("edited", layers=[layer])[0]
        w = lm.adapter.module(info.path).weight
        u, v = torch.randn(w.shape[0], rank, generator=gen), torch.randn(rank, w.shape[1], generator=gen)
        delta = u @ v
        deltas[info.param_name] = (0.05 * float(w.norm()) / float(delta.norm())) * delta
    params = dict(lm.model.named_parameters())
    with torch.no_grad():
        for name, d in deltas.items():
            params[name].add_(d)
    snapshot, t_update = timed(lambda: monitor.update(deltas))
    _, t_profile = timed(monitor.profile)
    changed = [m for m in snapshot.matrices if m.matrix in snapshot.changed]
    results["norms.update"] = {
        "seconds": t_update, "changed_matrices": len(changed), "rank": rank,
        "fro_rel": [round(m.fro_rel, 6) for m in changed], **spectral_errors(monitor),
    }
    results["norms.profile"] = {"seconds": t_profile}
    with torch.no_grad():
        for name, d in deltas.items():
            params[name].sub_(d)


def activation_section(lm: Any, results: dict[str, Any], edit_layer: int) -> None:
    probes = build_probe_set(load_text("wikitext2-test"), n_snippets=16, n_prompts=16, seed=0)
    monitor = ActivationMonitor(lm, probes.texts, top_k=8, max_length=64, batch_size=8)
    report, t_base = timed(monitor.baseline)
    _, t_measure = timed(monitor.measure)
    stored = sum(v.numel() * v.element_size() for k, v in monitor.state_dict().items() if k.startswith("baseline/"))
    # A visible perturbation to show the scale of the numbers: a rank-one change of 10% of one down_proj.
    path = lm.adapter.mlp_out_proj(edit_layer)
    w = lm.adapter.weight(path)
    gen = torch.Generator().manual_seed(1)
    u, v = torch.randn(w.shape[0], 1, generator=gen), torch.randn(1, w.shape[1], generator=gen)
    delta = (0.1 * float(w.norm()) / float((u @ v).norm())) * (u @ v)
    lm.adapter.add_to_weight(path, delta)
    perturbed = {(r["name"], r["scope"], r["layer"]): r["value"] for r in monitor.measure().rows()}
    lm.adapter.add_to_weight(path, -delta)
    last = lm.adapter.num_layers - 1
    results["activations.baseline"] = {
        "seconds": t_base, "probes": len(probes.texts), "tokens": monitor.n_tokens, "layers": len(monitor.layers),
        "baseline_mb": stored / 2**20, "rows": len(report.rows()),
        "attn_share_by_layer": [round(s.attn_share, 4) for s in report.shares],
    }
    results["activations.measure"] = {
        "seconds": t_measure,
        "after_rank1_10pct_edit_of_layer": edit_layer,
        "cka_mlp_out_edited_layer": perturbed[("cka", "mlp.out_proj", edit_layer)],
        "cosine_mlp_out_edited_layer": perturbed[("cosine", "mlp.out_proj", edit_layer)],
        "angle_max_mlp_out_edited_layer": perturbed[("principal_angle_max_deg", "mlp.out_proj", edit_layer)],
        "norm_rel_mlp_out_edited_layer": perturbed[("mlp_out_norm_rel", "mlp.out_proj", edit_layer)],
        "cka_block_last_layer": perturbed[("cka", "block", last)],
        "cosine_block_last_layer": perturbed[("cosine", "block", last)],
    }


def edit_section(lm: Any, n_facts: int, results: dict[str, Any]) -> None:
    requests = load_edit_requests("counterfact", limit=n_facts)
    metrics, t_edit = timed(
        lambda: evaluate_edits(lm, requests, scope="all", config=EditEvalConfig(fluency=FluencyConfig(enabled=False)))
    )
    results["edit_metrics"] = {"seconds": t_edit, "facts": n_facts, **metrics.values}
    fluent, t_flu = timed(
        lambda: evaluate_edits(lm, requests, scope="all", config=EditEvalConfig(fluency=FluencyConfig(max_requests=n_facts)))
    )
    results["fluency"] = {
        "seconds": t_flu - t_edit, "prompts": fluent.counts["fluency_entropy"],
        "fluency_entropy": fluent.values["fluency_entropy"], "definition": fluent.definitions["fluency_entropy"],
        "example": fluent.generations[0][0],
    }


def downstream_section(lm: Any, tasks: list[str], n_examples: int, n_shots: int, results: dict[str, Any]) -> None:
    for task in tasks:
        config = DownstreamConfig(tasks=(task,), n_examples=n_examples, n_shots=n_shots, batch_size=16)
        evaluator = DownstreamEvaluator(config)
        result, seconds = timed(lambda evaluator=evaluator: evaluator.evaluate(lm).tasks[0])
        results[f"downstream.{task}"] = {
            "seconds": seconds, "n": result.n, "shots": result.n_shots, "accuracy": result.accuracy,
            "f1": result.f1, "mcc": result.mcc, "predicted_label_counts": [result.predictions.count(k) for k in sorted(set(result.labels))],
        }


def perplexity_section(lm: Any, tokens: int, results: dict[str, Any]) -> None:
    config = PerplexityConfig(max_tokens=tokens, window=512, stride=256, batch_size=4)
    evaluator = PerplexityEvaluator(config)
    result, seconds = timed(lambda: evaluator.evaluate(lm))
    results["perplexity"] = {"seconds": seconds, "tokens": result.n_tokens, "window": 512, "stride": 256,
                             "perplexity": result.perplexity}


def print_table(results: dict[str, Any]) -> None:
    table = Table(title="Checkpoint-time cost on the unedited model")
    table.add_column("component")
    table.add_column("seconds", justify="right")
    table.add_column("values")
    for name, entry in results.items():
        if not isinstance(entry, dict) or "seconds" not in entry:
            continue
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in entry.items() if k not in {"seconds", "example", "definition", "attn_share_by_layer"}
        )
        table.add_row(name, f"{entry['seconds']:.2f}", values)
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--facts", type=int, default=50)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--ppl-tokens", type=int, default=4096)
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: norms,activations,edit,downstream,perplexity")
    parser.add_argument("--out", default="benchmarks/results/evaluation.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    lm = load(args.model)
    results: dict[str, Any] = {
        **provenance(args), "model": args.model, "device": str(lm.device), "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(), "host": platform.node(), "torch": torch.__version__,
    }
    sections: list[tuple[str, Callable[[], None]]] = [
        ("norms", lambda: norm_section(lm, edited_layers=[3, 4, 5, 6, 7], rank=10, results=results)),
        ("activations", lambda: activation_section(lm, results, edit_layer=4)),
        ("edit", lambda: edit_section(lm, args.facts, results)),
        ("downstream", lambda: downstream_section(lm, args.tasks.split(","), args.examples, args.shots, results)),
        ("perplexity", lambda: perplexity_section(lm, args.ppl_tokens, results)),
    ]
    for name, run in sections:
        if name in skip:
            continue
        with torch.no_grad():
            run()
        write_json_atomic(Path(args.out), results)  # partial results survive a later failure
        print(f"{name} done", flush=True)
    results["load_average_end"] = os.getloadavg()
    print_table(results)
    write_json_atomic(Path(args.out), results)
    print(f"wrote {args.out}")
    print(json.dumps({k: v for k, v in results.items() if k.startswith("downstream")}, indent=None)[:2000])


if __name__ == "__main__":
    main()
