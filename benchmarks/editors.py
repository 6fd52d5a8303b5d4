"""Benchmark of the locate-and-edit editors on the embedded model.

For each method (its default settings for the model): seconds per edit by phase, target-optimisation
steps, and CounterFact efficacy / paraphrase / neighbourhood after editing ``--n-facts`` facts (in one
batch, or one by one for ROME). Then, for the target optimisation alone (at each distinct last edited
layer): steps and seconds with and without MPES, batched versus one-at-a-time optimisation of the same
facts, and the suffix-only replay against recomputing every position (ratios measured in this run).
Prints a table and writes JSON::

    SEQEDIT_DATA_DIR=... python benchmarks/editors.py --methods rome,memit,emmet,alphaedit,encore \
        --n-facts 10 --out editors-benchmark.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cf_eval import load_counterfact, score
from provenance import provenance

from seqedit.editors import create_editor
from seqedit.editors.keys import fill_subject
from seqedit.editors.locate import LocateEditEditor
from seqedit.editors.targets import optimise_targets
from seqedit.models import hooks, load
from seqedit.models.tokens import encode_prompt_targets, subject_token_index, target_log_probs

PHASES = ("statistics", "targets", "keys", "solve")


def run_method(lm: Any, method: str, requests: list[Any]) -> dict[str, Any]:
    editor = create_editor(method, lm)
    assert isinstance(editor, LocateEditEditor)
    editor.statistics(lm, editor.resolve_layers(lm))  # statistics are cached; time the edit itself
    start, cpu_start = time.perf_counter(), time.process_time()
    result = editor.apply(lm, requests)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    scores = score(lm, requests)
    result.undo(lm.model)
    n = len(requests)
    steps = [s["steps"] for s in result.request_stats]
    return {
        "method": method,
        "layers": result.info["layers"],
        "batch_mode": result.info["batch_mode"],
        "seconds_per_edit": total / n,
        "cpu_seconds_per_edit": cpu / n,
        "phase_seconds_per_edit": {p: result.timings.get(p, 0.0) / n for p in PHASES},
        "mean_steps": sum(steps) / n,
        "mpes": editor.cfg.mpes,
        **scores,
        "delta_fro": result.delta_norms(),
        "request_stats": result.request_stats,
    }


def time_targets(lm: Any, method: str, requests: list[Any], **changes: Any) -> dict[str, Any]:
    editor = create_editor(method, lm, changes)
    assert isinstance(editor, LocateEditEditor)
    layer = editor.resolve_layers(lm)[-1]
    settings = editor.target_settings()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = optimise_targets(lm, requests, editor.context_templates(lm), layer, settings)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    steps = [s["steps"] for s in result.stats]
    return {
        "layer": layer,
        "mpes": settings.mpes,
        "batch_facts": settings.batch_facts,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mean_steps": sum(steps) / len(steps),
        "steps": steps,
        "top1_all_prompts": sum(bool(s["all_top1"]) for s in result.stats),
        "delta": result.delta,
    }


def reference_style_step_seconds(lm: Any, method: str, requests: list[Any], steps: int = 5) -> float:
    """CPU seconds per optimisation step done the way the released MEMIT/ROME code does it: one fact at a
    time, the full model forward on every step, logits over the whole vocabulary at every position
    (the KL row is left out, which favours this loop slightly)."""
    editor = create_editor(method, lm)
    assert isinstance(editor, LocateEditEditor)
    layer = editor.resolve_layers(lm)[-1]
    contexts = editor.context_templates(lm)
    tok = lm.tokenizer
    out_proj = lm.adapter.module(lm.adapter.mlp_out_proj(layer))
    seconds = 0.0
    for request in requests:
        prompts = [fill_subject(contexts.apply(t, request.prompt), request.subject) for t in contexts.templates]
        batch = encode_prompt_targets(tok, prompts, [request.target_new] * len(prompts)).to(lm.device)
        positions = torch.tensor(
            [subject_token_index(tok, contexts.apply(t, request.prompt), request.subject) for t in contexts.templates],
            device=lm.device,
        )
        rows = torch.arange(len(prompts), device=lm.device)
        delta = torch.zeros(lm.adapter.hidden_size, device=lm.device, requires_grad=True)
        optimiser = torch.optim.Adam([delta], lr=0.5)

        def add_delta(hidden: torch.Tensor, rows: torch.Tensor = rows, positions: torch.Tensor = positions,
                      delta: torch.Tensor = delta) -> torch.Tensor:
            bump = torch.zeros_like(hidden).index_put((rows, positions), delta.expand(len(rows), -1))
            return hidden + bump

        start = time.process_time()
        for _ in range(steps):
            optimiser.zero_grad()
            with hooks.edit_output(out_proj, add_delta):
                logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = -target_log_probs(logits, batch)[1].mean() + 0.5 * delta.norm()
            loss.backward()
            optimiser.step()
        seconds += (time.process_time() - start) / steps
    return seconds / len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="rome,memit,emmet,alphaedit,encore")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-facts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy CPU)")
    parser.add_argument("--skip-targets", action="store_true", help="only the per-method runs")
    parser.add_argument("--out", type=Path, default=Path("editors-benchmark.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load(args.model)
    requests = load_counterfact(args.n_facts)
    report: dict[str, Any] = {
        **provenance(args),
        "model": args.model,
        "n_facts": len(requests),
        "device": str(lm.device),
        "threads": args.threads,
        "host": platform.node(),
        "torch": torch.__version__,
        "unedited": score(lm, requests),
        "methods": [],
        "targets": [],
    }
    print(f"unedited: {report['unedited']}", flush=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        row = run_method(lm, method, requests)
        report["methods"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in {"request_stats", "delta_fro"}}), flush=True)

    if not args.skip_targets:
        seen: set[int] = set()
        for method in methods:
            editor = create_editor(method, lm)
            assert isinstance(editor, LocateEditEditor)
            layer = editor.resolve_layers(lm)[-1]
            if layer in seen:
                continue
            seen.add(layer)
            plain = time_targets(lm, method, requests, mpes=False)
            early = time_targets(lm, method, requests, mpes=True)
            single = time_targets(lm, method, requests, mpes=False, batch_targets=False)
            every = time_targets(lm, method, requests, mpes=False, target_suffix_only=False)
            gap = float((plain["delta"] - single["delta"]).norm() / plain["delta"].norm())
            suffix_gap = float((plain["delta"] - every["delta"]).norm() / every["delta"].norm())
            reference = reference_style_step_seconds(lm, method, requests[:3])
            fact_steps = sum(plain["steps"]) + len(plain["steps"])  # passes = updates + final pass
            entry = {
                "method": method,
                "layer": layer,
                "without_mpes": {k: v for k, v in plain.items() if k != "delta"},
                "with_mpes": {k: v for k, v in early.items() if k != "delta"},
                "one_at_a_time": {k: v for k, v in single.items() if k != "delta"},
                "every_position": {k: v for k, v in every.items() if k != "delta"},
                "suffix_speedup_cpu": every["cpu_seconds"] / plain["cpu_seconds"],
                "suffix_vs_every_position_relative_delta_difference": suffix_gap,
                "batched_speedup_cpu": single["cpu_seconds"] / plain["cpu_seconds"],
                "mpes_speedup_cpu": plain["cpu_seconds"] / early["cpu_seconds"],
                "batched_speedup_wall": single["seconds"] / plain["seconds"],
                "mpes_speedup_wall": plain["seconds"] / early["seconds"],
                "batched_vs_single_relative_delta_difference": gap,
                "cpu_seconds_per_fact_pass": {
                    "reference_style": reference,
                    "every_position": every["cpu_seconds"] / fact_steps,
                    "one_at_a_time": single["cpu_seconds"] / fact_steps,
                    "batched": plain["cpu_seconds"] / fact_steps,
                },
            }
            report["targets"].append(entry)
            print(json.dumps(entry), flush=True)

    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['model']}, {report['n_facts']} CounterFact facts, {report['device']}, "
          f"{report['threads']} thread(s); unedited: {report['unedited']}")
    header = f"{'method':<10} {'mode':<18} {'s/edit':>7} {'cpu s':>6} " + " ".join(f"{p:>10}" for p in PHASES)
    header += f" {'steps':>6} {'ES':>5} {'PS':>5} {'NS':>5}"
    print(header)
    for row in report["methods"]:
        phases = " ".join(f"{row['phase_seconds_per_edit'][p]:>10.2f}" for p in PHASES)
        print(
            f"{row['method']:<10} {row['batch_mode']:<18} {row['seconds_per_edit']:>7.2f} "
            f"{row['cpu_seconds_per_edit']:>6.2f} {phases} "
            f"{row['mean_steps']:>6.1f} {row['efficacy']:>5.2f} {row['paraphrase']:>5.2f} {row['neighborhood']:>5.2f}"
        )
    if report["targets"]:
        print("\ntarget optimisation alone (CPU seconds; wall seconds in the JSON)")
        print(f"{'layer':>5} {'steps':>6} {'steps MPES':>10} {'cpu s':>8} {'MPES':>8} {'1-by-1':>8} {'batched x':>9}"
              f" {'MPES x':>7} {'suffix x':>8} {'cpu s/fact-pass: ref':>20} {'all pos':>7} {'1-by-1':>7} {'batched':>8}")
        for t in report["targets"]:
            per = t["cpu_seconds_per_fact_pass"]
            print(
                f"{t['layer']:>5} {t['without_mpes']['mean_steps']:>6.1f} {t['with_mpes']['mean_steps']:>10.1f} "
                f"{t['without_mpes']['cpu_seconds']:>8.1f} {t['with_mpes']['cpu_seconds']:>8.1f} "
                f"{t['one_at_a_time']['cpu_seconds']:>8.1f} {t['batched_speedup_cpu']:>9.2f} {t['mpes_speedup_cpu']:>7.2f}"
                f" {t['suffix_speedup_cpu']:>8.2f} {per['reference_style']:>20.2f} {per['every_position']:>7.2f}"
                f" {per['one_at_a_time']:>7.2f} {per['batched']:>8.2f}"
            )


if __name__ == "__main__":
    main()
