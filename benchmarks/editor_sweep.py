"""Sweep one editor setting on the embedded model and report efficacy, paraphrase, neighbourhood and drift.

Used to choose the defaults recorded in docs/editors.md, e.g.::

    python benchmarks/editor_sweep.py --method memit --n-facts 10 \
        --grid '{"layers": [[1,2,3,4,5], [3,4,5,6,7], [5,6,7,8,9]]}' --out sweep.json

Every setting edits the same facts from the unedited model (each edit is undone exactly afterwards).
With ``--reuse-targets`` the target vectors are computed once per (facts, last layer, target settings) and
reused by the other settings: they depend only on the unedited model, which every run starts from, so
solver settings (λ_p, λ_n, thresholds) are swept at the cost of the solves alone.
"Drift" is the mean absolute change of log P(true answer) on the neighbourhood prompts of ``--n-unrelated``
other CounterFact records -- a finer measure of collateral damage than the 0/1 neighbourhood score.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cf_eval import _mean_log_probs, load_counterfact, score
from provenance import provenance

from seqedit.editors import create_editor, locate
from seqedit.models import load


def memoise_targets() -> None:
    """Make the editors reuse target vectors computed earlier in this process for the same inputs."""
    compute = locate.optimise_targets
    memo: dict[tuple[object, ...], object] = {}

    def cached(lm, requests, contexts, layer, settings):  # type: ignore[no-untyped-def]
        key = (tuple(r.case_id for r in requests), contexts.templates, layer, settings)
        if key not in memo:
            memo[key] = compute(lm, requests, contexts, layer, settings)
        return copy.deepcopy(memo[key])

    locate.optimise_targets = cached  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", help="the method of every --grid run")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-facts", type=int, default=10)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--n-unrelated", type=int, default=50)
    parser.add_argument("--grid", default="{}", help="JSON: setting -> list of values (cartesian product)")
    parser.add_argument("--set", default="{}", help="JSON: fixed overrides for every run")
    parser.add_argument("--runs", default=None, help='JSON list of {"method": ..., setting: value} (instead of --grid)')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse-targets", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.reuse_targets:
        memoise_targets()

    lm = load(args.model)
    requests = load_counterfact(args.n_facts, args.offset)
    unrelated = load_counterfact(args.n_unrelated, args.offset + 1000)
    nb_prompts = [nb.prompt for r in unrelated for nb in r.neighborhood]
    nb_targets = [nb.target for r in unrelated for nb in r.neighborhood]
    base_lp = _mean_log_probs(lm, nb_prompts, nb_targets)
    grid = json.loads(args.grid)
    fixed = json.loads(args.set)
    rows = [{"setting": "unedited", **score(lm, requests)}]
    print(json.dumps(rows[0]), flush=True)
    runs: list[dict[str, object]]
    if args.runs:
        runs = json.loads(args.runs)
    else:
        if not args.method:
            parser.error("give --method with --grid, or --runs")
        names = list(grid)
        runs = [
            {"method": args.method, **dict(zip(names, values, strict=True))}
            for values in (itertools.product(*(grid[n] for n in names)) if names else [()])
        ]
    for run in runs:
        method = str(run["method"])
        overrides = {**fixed, **{k: v for k, v in run.items() if k != "method"}}
        editor = create_editor(method, lm, overrides)
        start = time.perf_counter()
        result = editor.apply(lm, requests)
        seconds = time.perf_counter() - start
        scores = score(lm, requests)
        drift = float((_mean_log_probs(lm, nb_prompts, nb_targets) - base_lp).abs().mean())
        row = {
            "method": method,
            "setting": overrides,
            **scores,
            "drift": drift,
            "seconds": seconds,
            "timings": result.timings,
            "delta_norms": result.delta_norms(),
            "mean_steps": sum(s["steps"] for s in result.request_stats) / len(result.request_stats),
            "layer_figures": result.info.get("layer_figures"),
        }
        result.undo(lm.model)
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps({**provenance(args), "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
