"""Norm growth under post-training interventions (the paper's first experiment) on the embedded model:
continued pre-training on WikiText-2, full fine-tuning on SST-2, LoRA fine-tuning on SST-2, each for a
small step budget. Prints one table per kind (matrix kind, ‖W‖ at start and end, relative growth) and
writes JSON; every run also leaves its run directory under --runs.

    PYTHONPATH=src SEQEDIT_CACHE_DIR=... SEQEDIT_DATA_DIR=... python benchmarks/intervention_norms.py \
        --steps 30 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from provenance import provenance

from seqedit.intervene import INTERVENTION_KINDS, InterventionConfig, run_intervention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(INTERVENTION_KINDS))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--record-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/interventions"),
                        help="parent of the run directories, one per kind (an existing run is never overwritten)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/intervention_norms.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for kind in args.kinds.split(","):
        cfg = InterventionConfig(
            kind=kind, model=args.model, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
            record_every=args.record_every, output_dir=args.runs / kind,
        )
        started = time.perf_counter()
        summary = run_intervention(cfg)
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        results.append(summary)
        print(f"\n{kind} on {summary['data']}: {summary['steps']} steps, lr {summary['lr']:g}, batch "
              f"{args.batch_size}x{args.seq_len} tokens, {summary['wall_s']} s; held-out loss "
              f"{summary['eval_loss_start']:.3f} -> {summary['eval_loss_end']:.3f}")
        print(f"{'matrix kind':14} {'n':>3} {'‖W‖ start':>11} {'‖W‖ end':>11} {'growth':>10} {'max rel':>9} {'‖W−W0‖':>8}")
        for row in summary["growth"]:
            print(f"{row['kind']:14} {row['matrices']:3d} {row['fro_start']:11.4f} {row['fro_end']:11.4f} "
                  f"{100 * row['growth']:+9.4f}% {row['fro_rel_max']:9.6f} {row['dist_from_init']:8.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**provenance(args), "threads": torch.get_num_threads(), "runs": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
