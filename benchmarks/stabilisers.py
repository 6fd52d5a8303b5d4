"""Seconds per edit of UltraEdit against MEMIT (and MEMIT with each stabiliser) on the same CounterFact
facts on the embedded model, edited in batches, with CounterFact scores after the last batch and the
stabilisers' own figures. The ratio against MEMIT, measured in one run on one machine, is the number to
read: absolute seconds depend on the machine and its load. Prints a table and writes JSON::

    SEQEDIT_DATA_DIR=... SEQEDIT_CACHE_DIR=... python benchmarks/stabilisers.py --n-facts 20 --batch-size 10 \
        --out benchmarks/results/stabilisers.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cf_eval import load_counterfact, score
from provenance import provenance

from seqedit.editors import EditResult, create_editor
from seqedit.editors.locate import LocateEditEditor
from seqedit.models import load

# name -> (method, overrides): the study's variants (examples/study/stabilisers.yaml)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "memit": ("memit", {}),
    "memit+nas": ("memit", {"nas": True}),
    "memit+prune": ("memit", {"prune": True}),
    "memit+rect": ("memit", {"rect": True}),
    "memit+budget": ("memit", {"norm_budget": 1.02}),
    "encore": ("encore", {}),
    "encore+nas": ("encore", {"nas": True}),
    "ultraedit": ("ultraedit", {}),
}


def run_variant(lm: Any, name: str, requests: list[Any], batch_size: int) -> dict[str, Any]:
    method, overrides = VARIANTS[name]
    editor = create_editor(method, lm, overrides)
    if isinstance(editor, LocateEditEditor):
        editor.statistics(lm, editor.resolve_layers(lm))  # cached statistics are not part of an edit's time
    results: list[EditResult] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(requests), batch_size):
        results.append(editor.apply(lm, requests[first : first + batch_size]))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    scores = score(lm, requests)
    growth = {}
    for param in results[0].deltas:
        original = results[0].originals[param].double()
        total = sum(r.deltas[param].double() for r in results)
        growth[param] = float((original + total).norm() / original.norm())
    for result in reversed(results):
        result.undo(lm.model)
    stats = [s for r in results for s in r.request_stats]
    extra_keys = ("nas_scale", "nas_skipped", "rect_kept_fraction", "prune_restrained_values",
                  "budget_matrices_scaled", "budget_min_factor")
    return {
        "variant": name,
        "method": method,
        "overrides": overrides,
        "seconds_per_edit": seconds / len(requests),
        "cpu_seconds_per_edit": cpu / len(requests),
        "phase_seconds_per_edit": {
            phase: sum(r.timings.get(phase, 0.0) for r in results) / len(requests)
            for phase in sorted({p for r in results for p in r.timings})
        },
        **scores,
        "weight_growth_mean": sum(growth.values()) / len(growth),
        "weight_growth_max": max(growth.values()),
        "stabiliser_figures": {k: [s[k] for s in stats if k in s] for k in extra_keys if any(k in s for s in stats)},
    }


def print_table(report: dict[str, Any]) -> None:
    memit = next((r for r in report["variants"] if r["variant"] == "memit"), None)
    print(f"{report['n_facts']} facts, batches of {report['args']['batch_size']}, {report['machine']['threads']} thread(s); "
          f"load average {report['machine']['load_average']} -> {report['machine'].get('load_average_after')}")
    header = f"{'variant':<14}{'s/edit':>9}{'cpu s/edit':>11}{'vs MEMIT':>10}{'eff':>6}{'para':>6}{'neigh':>7}{'‖W‖/‖W0‖':>10}"
    print(header)
    print("-" * len(header))
    for row in report["variants"]:
        ratio = row["cpu_seconds_per_edit"] / memit["cpu_seconds_per_edit"] if memit else float("nan")
        print(f"{row['variant']:<14}{row['seconds_per_edit']:>9.2f}{row['cpu_seconds_per_edit']:>11.2f}{ratio:>10.3f}"
              f"{row['efficacy']:>6.2f}{row['paraphrase']:>6.2f}{row['neighborhood']:>7.2f}"
              f"{row['weight_growth_max']:>10.4f}")
    u = report["unedited"]
    print(f"{'unedited':<14}{'':>9}{'':>11}{'':>10}{u['efficacy']:>6.2f}{u['paraphrase']:>6.2f}{u['neighborhood']:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="memit,ultraedit", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-facts", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a busy CPU)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stabilisers.json"))
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    lm = load(args.model)
    requests = load_counterfact(args.n_facts)
    report: dict[str, Any] = {
        **provenance(args),
        "run_environment": {
            "host": platform.node(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "torch": torch.__version__,
            "device": str(lm.device), "threads": args.threads,
        },
        "model": args.model,
        "n_facts": len(requests),
        "unedited": score(lm, requests),
        "variants": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        row = run_variant(lm, name, requests, args.batch_size)
        report["variants"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stabiliser_figures"}), flush=True)
        # written after every variant, so a run stopped early keeps what it measured
        report["machine"]["load_average_after"] = list(os.getloadavg())
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print_table(report)


if __name__ == "__main__":
    main()
