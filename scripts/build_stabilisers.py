"""Rebuild docs/stabilisers.md, its figures and the README's two sentences from the committed results.

    python scripts/build_stabilisers.py [--results results/stabilisers] [--docs docs] [--readme README.md]

Reads only compact results (``seqedit study examples/study/stabilisers.yaml --collect results/stabilisers``).
The study's ``memit`` and ``encore`` runs have exactly the settings of the same runs in
examples/study/seed-findings.yaml, so when results/stabilisers has no such run the seed study's is used
(the script checks that the two resolved configs agree on everything but the study's name).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from seqedit.report.findings import replace_marked_block
from seqedit.report.stabilisers import compared_runs, recommendation, write_page

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("memit", "memit-nas", "memit-prune", "memit-rect", "memit-budget", "encore", "encore-nas", "ultraedit")
SHARED_WITH_SEED = ("memit", "encore")
README_START = "<!-- stabilisers:start -->"
README_END = "<!-- stabilisers:end -->"
COMMAND = ("seqedit study examples/study/stabilisers.yaml --workers 2 --threads 1 --collect results/stabilisers"
           " && python scripts/build_stabilisers.py")

INTRO = f"""\
MEMIT alone and with each stabiliser (NAS, PRUNE, RECT, a norm budget), ENCORE with and without NAS, and
UltraEdit, on the same CounterFact stream (seeded order 0, batches of 10) on SmolLM2-135M-Instruct, with the
probes, checkpoints and evaluations of the findings study (docs/findings.md, "Protocol"): edit scores on a
fixed sample of 200 of the edited facts, perplexity on 4,096 WikiText-2 valid tokens, 3-shot SST-2 and MMLU on
200 examples each. Formulas and defaults: docs/editors.md ("Stabilisers", "UltraEdit"). Settings:
`examples/study/stabilisers.yaml`; each run's resolved settings are committed beside its tables.
`memit` and `encore` are the findings study's runs (identical settings; results/seed-findings).

Seconds per edit are editing time only (checkpoints excluded), one torch thread, two runs sharing the
machine's 2 cores, so compare them as ratios. A run resumes exactly from its run directory; where that
directory was lost between working sessions, what the run had reached is committed and shown. Every table
says how far each run has got.

Reproduce: `{COMMAND}`"""


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("name", "output_dir", "study", "run_name")}


def run_dirs(results: Path, seed: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for name in ORDER:
        own, shared = results / name, seed / name
        if (own / "progress.json").exists():
            found.append((name, own))
        elif name in SHARED_WITH_SEED and (shared / "progress.json").exists():
            found.append((name, shared))
    return found


def check_shared(study_file: Path, seed_file: Path) -> None:
    """The shared runs must have the same settings in both study files (defaults merged with the run's)."""
    study, seed = yaml.safe_load(study_file.read_text()), yaml.safe_load(seed_file.read_text())
    for name in SHARED_WITH_SEED:
        a = {**study["defaults"], **study["runs"][name]}
        b = {**seed["defaults"], **seed["runs"][name]}
        if _comparable(a) != _comparable(b):
            raise SystemExit(f"{study_file}: run {name} differs from {seed_file}'s; collect it separately")


def readme_sentences(runs: list) -> str:
    n, compared = compared_runs(runs)
    lines = recommendation(compared, n)
    return " ".join(lines) + " Details: [docs/stabilisers.md](docs/stabilisers.md)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "stabilisers")
    parser.add_argument("--seed-results", type=Path, default=ROOT / "results" / "seed-findings")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    check_shared(ROOT / "examples" / "study" / "stabilisers.yaml", ROOT / "examples" / "study" / "seed-findings.yaml")
    pairs = run_dirs(args.results, args.seed_results)
    if not pairs:
        raise SystemExit(f"{args.results}: no collected runs (run the study with --collect first)")
    page = args.docs / "stabilisers.md"
    images = args.docs / "images" / "stabilisers"
    runs = write_page(pairs, images, page, image_prefix="images/stabilisers/", intro=INTRO)
    text = args.readme.read_text(encoding="utf-8") if args.readme.exists() else ""
    if README_START in text and README_END in text:
        text = replace_marked_block(text, README_START, README_END, readme_sentences(runs))
        args.readme.write_text(text, encoding="utf-8")
    print(f"wrote {page} and {images}/")


if __name__ == "__main__":
    main()
