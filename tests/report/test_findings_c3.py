"""C3's verdict over editing runs: a met collapse criterion shows it, a real degradation partly shows it,
and a run that stopped on a divergence says why in its line."""

from __future__ import annotations

from seqedit.report.findings import RunFindings, verdict_c3


def _run(name: str, ppl_end: float, *, collapse: dict | None = None, status: str = "finished",
         stopped: str | None = None) -> RunFindings:
    run = RunFindings(name, name, "edit", 45, status)
    run.numbers.update(perplexity={"start": 10.0, "end": ppl_end, "at": 40.0}, collapse=collapse or {})
    if stopped:
        run.numbers["stopped"] = stopped
    return run


def test_collapse_shows_c3_and_a_divergence_stop_is_named() -> None:
    message = "stopped at step 45 (45 edits): divergence 'step_change'"
    verdict = verdict_c3([_run("memit", 10.5), _run("mend", 72.0, collapse={"perplexity": {"n_edits": 10}},
                                                     status="failed", stopped=message)])
    assert verdict.verdict == "shown"
    memit, mend = verdict.lines[:2]
    assert memit.endswith("no collapse criterion met") and "+5.0%" in memit
    assert mend.endswith(f"collapse: perplexity at 10 edits; {message}") and "+620.0%" in mend


def test_degradation_without_collapse_is_partial() -> None:
    assert verdict_c3([_run("memit", 11.5)]).verdict == "partly shown"
    assert verdict_c3([_run("memit", 10.5)]).verdict == "not shown on this model"


def test_log_axes_only_when_one_run_dwarfs_the_rest() -> None:
    from seqedit.report.findings import _one_run_dominates

    assert _one_run_dominates([0.1, 0.2, 5.0])
    assert not _one_run_dominates([0.1, 0.2, 0.9]) and not _one_run_dominates([5.0]) and not _one_run_dominates([])
