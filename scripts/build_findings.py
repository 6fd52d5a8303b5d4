"""Rebuild docs/findings.md, its figures and the README's verdict table from the committed study results.

    python scripts/build_findings.py [--results results/seed-findings] [--docs docs]

Reads only the compact results under ``--results`` (one folder per run, written by
``seqedit study examples/study/seed-findings.yaml --collect results/seed-findings``); runs no model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqedit import rundir
from seqedit.report.findings import (
    analyse_runs,
    progress_word,
    render_markdown,
    replace_marked_block,
    verdicts,
    write_findings,
)
from seqedit.report.stabilisers import TABLE_HEAD, StabiliserRun, analyse_run, comparison_row

ROOT = Path(__file__).resolve().parents[1]
STUDY_COMMAND = (
    "seqedit study examples/study/seed-findings.yaml --workers 2 --threads 1 --collect results/seed-findings"
    " && python scripts/build_findings.py"
)
README_START = "<!-- findings-table:start -->"
README_END = "<!-- findings-table:end -->"
EDITS_START = "<!-- edits-table:start -->"
EDITS_END = "<!-- edits-table:end -->"

PROTOCOL = """\
The claims of Gupta et al. (2025), *Norm Growth and Stability Challenges in Localized Sequential Knowledge
Editing*, checked on the embedded model (SmolLM2-135M-Instruct, dequantised from Q4_1) with CounterFact,
numbered as in the README: **C1** post-training interventions grow the norms of the updated matrices;
**C2** every editor grows the edited matrices with every edit; **C3** the localized growth unbalances the
model (degradation, collapse); **C4** activation norms fall and activations move into other subspaces;
**C5** MPES and a Frobenius-norm constraint (ENCORE) slow this. And the norm-feedback question of
Norm-Anchor Scaling (Liu et al. 2026): exponential growth before a collapse, or ‖W − W₀‖ ∝ √edits?

**Protocol** (`examples/study/seed-findings.yaml`; each run's resolved settings are committed beside its
tables): one CounterFact fact stream (seeded order 0) for every editor; norms of all 210 matrices after every
batch; at checkpoints (every 100 edits and log-spaced) edit scores on a fixed seeded sample of 200 of the
planned facts (those already edited), perplexity on 4,096 WikiText-2 *valid* tokens, 3-shot SST-2 and MMLU
on 200 examples each, and activations on 16 WikiText-2 *test* snippets plus 16 prompts of unedited facts,
read against noise floors from two halves of that probe set on the unedited model. Key statistics come from
WikiText-2 *test* paragraphs (300). MPES counts every rewriting prompt (`mpes_rule: all_prompts`); r-ROME
uses the plain-mean key and its residual (docs/editors.md).

**Budget.** Measured on this 2-core machine (one torch thread per run, two runs at once, other work on the
machine): MEMIT about 10-20 s per edit including checkpoints, so 1,000 edits take several hours. A run resumes
exactly from its run directory; where that directory was lost between working sessions, what the run had
reached was committed and is what the page shows. Every table below says how far each run has got, and a
verdict is only as strong as the edit counts behind it.

**MEND's hypernetwork** is trained first, for 20 minutes (`seqedit mend train --max-minutes 20`; 1,493 of 2,000
steps, record in `results/seed-findings-mend-training/`), far shorter than the MEND paper's training. Its
learned step size for the lowest edited layer (27) ended 6x and 130x larger in magnitude than those of
layers 28 and 29 (its last logged step, 1,475), and layer 27 is the matrix that blew up. An earlier run with
a hypernetwork trained the same way (1,516 steps) had passed 149 edits without a divergence stop when its run
directory was lost (not collected, so not shown): where MEND collapses depends on its training, so read its
collapse point as one sample.

**How the verdicts are decided** (`src/seqedit/report/findings.py`): C1 shown when every intervention
without weight decay grew most of its trained matrices and all three kinds ran; C2 shown when every editor
family ran, grew its edited matrices and its mean norm rose after ≥90% of the batches (a verdict over fewer
families or kinds is at most "partly shown"); C3 shown when a run met a collapse criterion (perplexity
≥2× the unedited, latest-batch efficacy <.5 at two checkpoints in a row, some edited matrix at ≥2× its
norm, non-finite values), partly shown when perplexity rose ≥10% or an accuracy fell by more than twice its
binomial noise; C4 judged per layer against the noise floor (a move counts at ≥3× the floor); C5 shown when
ENCORE is below MEMIT on norm growth, distance, perplexity rise and hidden-state angle; the loop shown when
an exponential fits ‖W − W₀‖ best, the log-log slope exceeds 1 and ‖δ‖ rises with ‖W‖.
"""


def readme_table(found: list, findings: list) -> str:
    rows = ["| claim | verdict on SmolLM2-135M |", "|---|---|"]
    rows += [f"| {v.claim}: {v.title} | **{v.verdict}** |" for v in found]
    sizes = ", ".join(f"{f.name} {f.size} {'steps' if f.kind == 'intervention' else 'edits'}"
                      + ("" if f.status == "finished" else f" ({progress_word(f.status)})") for f in findings)
    rows += ["", f"From the committed runs so far: {sizes}. Runs of the study that are not listed have not started yet."]
    return "\n".join(rows)


def _planned_edits(run: StabiliserRun) -> int:
    return int(run.data.config.get("num_edits") or run.edits)


def edits_table(runs: list[Path]) -> str:
    """The editing runs side by side at 200 edits and at each run length the study plans (200, 500, 1,000 ...):
    at each count, every run with a checkpoint there; the runs planned to get there that have not yet are
    named under it."""
    edit_runs = [r for r in (analyse_run(p) for p in runs) if r.data.kind == "edit"]
    counts = sorted({200, *(_planned_edits(r) for r in edit_runs)})
    rows: list[str] = []
    for count in counts:
        shown = [r for r in edit_runs if count in r.checkpoints]
        waiting = [r for r in edit_runs if r not in shown and _planned_edits(r) >= count]
        if not shown:
            continue
        rows += [f"After {count} edits (from results/seed-findings/; edit scores on the fixed sample's facts edited so"
                 " far; in brackets the maximum over matrices and the rise from the unedited model):", "", *TABLE_HEAD,
                 *[comparison_row(r, count) for r in shown], ""]
        if waiting:
            rows += [f"Short of {count} edits: " + ", ".join(f"{r.name} ({r.edits} edits, {progress_word(r.status)})"
                                                           for r in waiting) + ".", ""]
    return "\n".join(rows).rstrip() if rows else "No checkpoint is shared by the editing runs yet."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "seed-findings")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    runs = sorted(p for p in args.results.iterdir() if (p / rundir.PROGRESS).exists())
    if not runs:
        raise SystemExit(f"{args.results}: no collected runs (run the study with --collect first)")
    images = args.docs / "images" / "findings"
    page = args.docs / "findings.md"
    write_findings(runs, images, title="Findings: the seed paper's claims on SmolLM2-135M",
                   image_prefix="images/findings/", command=STUDY_COMMAND, markdown_path=page)
    analysed = analyse_runs(runs)
    found = verdicts([f for _, f in analysed])
    body = render_markdown("Findings: the seed paper's claims on SmolLM2-135M", found, [f for _, f in analysed],
                           "images/findings/", STUDY_COMMAND)
    title, _, rest = body.partition("\n\n")
    page.write_text(f"{title}\n\n{PROTOCOL}\n{rest}", encoding="utf-8")
    text = args.readme.read_text(encoding="utf-8") if args.readme.exists() else ""
    if README_START in text and README_END in text:
        text = replace_marked_block(text, README_START, README_END, readme_table(found, [f for _, f in analysed]))
    if EDITS_START in text and EDITS_END in text:
        text = replace_marked_block(text, EDITS_START, EDITS_END, edits_table(runs))
    if text:
        args.readme.write_text(text, encoding="utf-8")
    print(f"wrote {page} and {images}/")


if __name__ == "__main__":
    main()
