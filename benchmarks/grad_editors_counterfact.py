"""Efficacy of the gradient-based editors (FT-L, FT, LoRA, MEND) on CounterFact facts, edited one after
another on the embedded model; prints a table and writes JSON.

    PYTHONPATH=src SEQEDIT_CACHE_DIR=... SEQEDIT_DATA_DIR=... python benchmarks/grad_editors_counterfact.py \
        --methods ft-l,ft,lora,mend --n 10 --threads 1

Per method: every fact is edited with its own ``apply`` (sequential editing); ``immediate`` scores a fact
right after its edit, ``after all`` scores all facts once every edit is in (retention included). The
edits are then undone in reverse order and the model is checked to be bit-for-bit the unedited one.
Scores: efficacy / paraphrase / neighbourhood of ``seqedit.evaluate.evaluate_edits`` (see ``cf_eval.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cf_eval import DEFINITION, counterfact_scores
from provenance import provenance

from seqedit.data import load_edit_requests
from seqedit.editors import create_editor
from seqedit.models import load


def held_out_facts(n: int, offset: int) -> list:
    facts = load_edit_requests("counterfact", skip_invalid=True)
    train_prompts = {f.full_prompt for f in load_edit_requests("counterfact-train", skip_invalid=True)}
    # MEND trains on the train file: keep only edit facts whose prompt it never saw.
    unseen = [f for f in facts if f.full_prompt not in train_prompts]
    return unseen[offset : offset + n]


def run_method(lm, name: str, overrides: dict, facts: list) -> dict:
    editor = create_editor(name, lm, overrides)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    results, immediate = [], []
    started = time.perf_counter()
    for fact in facts:
        results.append(editor.apply(lm, [fact]))
        immediate.append(counterfact_scores(lm, [fact])["efficacy_score"])
    edit_seconds = time.perf_counter() - started
    scores = counterfact_scores(lm, facts)
    cumulative = {}
    for result in results:
        for param, delta in result.deltas.items():
            cumulative[param] = cumulative.get(param, 0) + delta.double()
    params = dict(lm.model.named_parameters())
    fro_rel = {k: float(params[k].double().norm() / before[k].double().norm()) for k in cumulative}
    for result in reversed(results):
        result.undo(lm.model)
    restored = all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    return {
        "method": name,
        "config": editor.config.model_dump(mode="json"),
        "immediate_efficacy": sum(immediate) / len(immediate),
        **{f"after_all_{k}": v for k, v in scores.items()},
        "edit_seconds": round(edit_seconds, 1),
        "seconds_per_edit": round(edit_seconds / len(facts), 2),
        "mean_steps": (sum(r.info.get("steps", 0) for r in results) / len(results)),
        "mean_delta_fro_per_edit": sum(sum(r.delta_norms().values()) for r in results) / len(results),
        "cumulative_delta_fro": {k: float(v.norm()) for k, v in cumulative.items()},
        "fro_rel_after_all": fro_rel,
        "undo_bit_exact": restored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="ft-l,ft,lora,mend")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--overrides", default="{}", help='JSON: {"ft-l": {"lr": 1e-3}, ...}')
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grad_editors_counterfact.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides)
    lm = load(args.model)
    facts = held_out_facts(args.n, args.offset)
    baseline = counterfact_scores(lm, facts)
    rows = []
    for name in args.methods.split(","):
        row = run_method(lm, name, overrides.get(name, {}), facts)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in {"config", "cumulative_delta_fro", "fro_rel_after_all"}}), flush=True)
    header = (f"{'method':8} {'ES now':>7} {'ES all':>7} {'PS all':>7} {'NS all':>7} {'s/edit':>7} {'‖ΔW‖/edit':>10} "
              f"{'max ‖W‖/‖W0‖':>13}")
    print(f"\n{len(facts)} CounterFact facts ({DEFINITION}); unedited: ES {baseline['efficacy_score']:.2f} "
          f"PS {baseline['paraphrase_score']:.2f} NS {baseline['neighborhood_score']:.2f}\n{header}")
    for r in rows:
        print(f"{r['method']:8} {r['immediate_efficacy']:7.2f} {r['after_all_efficacy_score']:7.2f} "
              f"{r['after_all_paraphrase_score']:7.2f} {r['after_all_neighborhood_score']:7.2f} "
              f"{r['seconds_per_edit']:7.2f} {r['mean_delta_fro_per_edit']:10.3f} {max(r['fro_rel_after_all'].values()):13.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**provenance(args), "model": lm.name, "facts": [f.case_id for f in facts], "definition": DEFINITION,
                                    "threads": torch.get_num_threads(), "baseline": baseline, "methods": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
