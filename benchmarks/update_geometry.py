"""Geometry of the accumulated updates of a finished run: why the norms grow the way they do.

For every matrix the run changed, with ``D = Σ_i ΔW_i`` the sum of the batch updates in the ledger:

* ``‖W‖ − ‖W₀‖`` (measured) against its second-order expansion ``⟨W₀, D⟩/‖W₀‖ + ‖D‖²/2‖W₀‖`` (the
  second term is what nearly orthogonal updates add; the first is how much they lean against or along W₀);
* ``‖D‖`` against ``(Σ‖ΔW_i‖²)^½``: equal when the batch updates are mutually orthogonal, in which case
  ``‖W − W₀‖`` grows like the square root of the number of batches;
* the mean and largest |cosine| between the batch updates.

Prints a table and writes JSON::

    python benchmarks/update_geometry.py runs/memit-200 runs/encore-200 --out update-geometry.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

from seqedit.models import load
from seqedit.runner.config import load_config
from seqedit.runner.store import RunStore


def matrix_geometry(w0: torch.Tensor, updates: list[torch.Tensor]) -> dict[str, float]:
    w0 = w0.double()
    flat = torch.stack([u.double().flatten() for u in updates])
    total = flat.sum(0).view_as(w0)
    norms = flat.norm(dim=1)
    cosines = (flat @ flat.T) / (norms[:, None] * norms[None, :])
    off_diagonal = cosines[~torch.eye(len(updates), dtype=torch.bool)].abs()
    w0_norm = w0.norm()
    return {
        "fro0": float(w0_norm),
        "growth": float((w0 + total).norm() - w0_norm),
        "growth_along_w0": float((w0 * total).sum() / w0_norm),
        "growth_orthogonal": float(total.norm() ** 2 / (2 * w0_norm)),
        "dist_from_init": float(total.norm()),
        "dist_if_orthogonal": float(norms.pow(2).sum().sqrt()),
        "mean_abs_cosine": float(off_diagonal.mean()) if len(updates) > 1 else 0.0,
        "max_abs_cosine": float(off_diagonal.max()) if len(updates) > 1 else 0.0,
    }


def run_geometry(run_dir: Path) -> dict[str, Any]:
    store = RunStore(run_dir)
    config = load_config(store.config_path)
    steps = int(store.read_progress()["completed_steps"])
    ledgers = [store.load_ledger(step) for step in range(1, steps + 1)]
    lm = load(config.model, dtype=config.dtype, device="cpu")
    params = dict(lm.model.named_parameters())
    matrices = sorted({name for result in ledgers for name in result.deltas})
    rows = {}
    for name in matrices:
        updates = [r.deltas[name] for r in ledgers if name in r.deltas]
        rows[name] = {"batches": len(updates), **matrix_geometry(params[name].detach(), updates)}
    return {"run": str(run_dir), "method": config.method, "steps": steps, "matrices": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("update-geometry.json"))
    args = parser.parse_args()
    report = [run_geometry(run) for run in args.runs]
    args.out.write_text(json.dumps({**provenance(args), "rows": report}, indent=1) + "\n", encoding="utf-8")
    print(f"{'run':<12} {'matrix':<36} {'growth':>7} {'along W0':>9} {'orth.':>7} {'|D|':>7} {'orth. |D|':>9}"
          f" {'mean|cos|':>9} {'max|cos|':>8}")
    for run in report:
        for name, m in run["matrices"].items():
            print(f"{run['method']:<12} {name:<36} {m['growth']:>7.3f} {m['growth_along_w0']:>9.3f} "
                  f"{m['growth_orthogonal']:>7.3f} {m['dist_from_init']:>7.2f} {m['dist_if_orthogonal']:>9.2f} "
                  f"{m['mean_abs_cosine']:>9.4f} {m['max_abs_cosine']:>8.4f}")


if __name__ == "__main__":
    main()
