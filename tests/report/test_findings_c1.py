"""C1's verdict over intervention runs: decay-free runs decide it, all three kinds are needed for "shown",
and a kind run with and without weight decay says which effect wins."""

from __future__ import annotations

import pytest

from seqedit.report.findings import RunFindings, decay_alone, progress_word, verdict_c1


def _run(name: str, kind: str, decay: float, ratio: float, grew: float = 0.9) -> RunFindings:
    run = RunFindings(name, f"{kind} (weight decay {decay})", "intervention", 500, "finished")
    run.numbers.update(fro_rel_mean_end=ratio, grew_share=grew, by_kind={"mlp.out_proj": ratio},
                       eval_loss={"start": 1.25, "end": 0.5})
    return run


def test_decay_against_training_is_called_for_each_pair() -> None:
    verdict = verdict_c1([_run("lora-wd0", "lora", 0.0, 1.0021), _run("lora-wd0.01", "lora", 0.01, 0.9994, 0.1),
                          _run("ft-wd0", "finetune", 0.0, 1.0003), _run("ft-wd0.01", "finetune", 0.01, 1.0001)])
    lora = next(line for line in verdict.lines if line.startswith("- lora, weight decay"))
    assert "0.9994 against 1.002" in lora and "decay wins: the norms shrink" in lora
    assert lora.endswith("Held-out loss 1.250 → 0.500 without decay, 1.250 → 0.500 with it.")
    finetune = next(line for line in verdict.lines if line.startswith("- finetune, weight decay"))
    assert "training's growth wins: the norms still grow" in finetune
    # both decay-free runs grew, but continued pre-training has not run: at most partly shown
    assert verdict.verdict == "partly shown" and "- not run yet: continued-pretraining" in verdict.lines


def test_decay_free_runs_decide_the_verdict() -> None:
    kinds = ("continued-pretraining", "finetune", "lora")
    grown = [_run(f"{k}-wd0", k, 0.0, 1.001) for k in kinds]
    assert verdict_c1([*grown, _run("lora-wd0.01", "lora", 0.01, 0.99, 0.0)]).verdict == "shown"
    shrunk = [*grown[:2], _run("lora-wd0", "lora", 0.0, 0.999, 0.2)]
    assert verdict_c1(shrunk).verdict == "partly shown"
    assert verdict_c1([_run(f"{k}-wd0", k, 0.0, 0.999, 0.2) for k in kinds]).verdict == "not shown on this model"
    assert verdict_c1([]).verdict == "not measured"


def test_an_unfinished_run_says_so() -> None:
    partial = _run("cpt-wd0", "continued-pretraining", 0.0, 1.0001)
    partial.size, partial.status = 80, "running"
    lines = verdict_c1([partial, _run("ft-wd0", "finetune", 0.0, 1.001)]).lines
    assert lines[0].startswith("- cpt-wd0 (continued-pretraining (weight decay 0.0), 80 steps, unfinished): ")
    assert lines[1].startswith("- ft-wd0 (finetune (weight decay 0.0), 500 steps): ")
    failed = _run("ft-wd0", "finetune", 0.0, 1.001)
    failed.status = "failed"
    assert verdict_c1([failed]).lines[0].startswith("- ft-wd0 (finetune (weight decay 0.0), 500 steps, failed): ")
    assert [progress_word(r.status) for r in (partial, failed, _run("x", "lora", 0.0, 1.0))] == ["unfinished", "failed", "finished"]


def test_decay_alone_separates_decoupled_decay_from_training() -> None:
    # 500 steps at lr 1e-4, wd 0.01: W shrinks by (1 - 1e-6)^500 with no gradient at all
    assert decay_alone(1e-4, 0.01, 500) == pytest.approx(1 - 500e-6, rel=1e-6)
    assert decay_alone(1e-4, 0.0, 500) == 1.0
    decayed = _run("ft-wd0.01", "finetune", 0.01, 0.99952)
    decayed.numbers["decay_alone"] = decay_alone(1e-4, 0.01, 500)
    line = next(x for x in verdict_c1([_run("ft-wd0", "finetune", 0.0, 1.00003), decayed]).lines
                if x.startswith("- finetune, weight decay"))
    assert "decay wins" in line and "(1 − lr·wd)^steps = 0.9995001" in line
    assert "training's part is +2e-05 (without decay +3e-05)" in line
