"""Studies on tiny models: runs from defaults and overrides, continuing unfinished runs, compact results,
and the findings page built from them."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
import yaml

from seqedit.report.findings import FIGURES, write_findings
from seqedit.runner.config import ConfigError
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore
from seqedit.runner.study import (
    collect_results,
    load_study,
    refresh_spectra,
    run_progress,
    run_state,
    run_study,
    study_runs,
)

TINY_MEMIT = {  # as in conftest.py: a small MEMIT on a tiny model
    "layers": [1, 2], "v_num_grad_steps": 4, "mom2_corpus": "builtin", "mom2_n_samples": 20, "mom2_max_length": 64,
    "context_count": 1,
}


def _study_file(tmp_path, runs=None):
    study = {
        "name": "tiny-study",
        "output_dir": str(tmp_path / "study"),
        "defaults": {
            "model": "tiny-llama",
            "dataset": {"name": "builtin"},
            "num_edits": 4,
            "batch_size": 2,
            "checkpoints": {"every": 2},
            "probe": {"texts": 4, "prompts": 4, "max_tokens": 24, "pca_k": 3},
            "evaluation": {"batch_size": 8, "retention": "fixed", "retention_sample": 3},
            "hparams": dict(TINY_MEMIT),
        },
        "runs": runs or {"memit": {"method": "memit"}, "encore": {"method": "encore", "hparams": {"norm_lambda": 5.0}}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def test_runs_merge_defaults_with_their_overrides(tmp_path):
    study = load_study(_study_file(tmp_path))
    runs = {r.name: r for r in study_runs(study)}
    assert runs["encore"].config.hparams == {**TINY_MEMIT, "norm_lambda": 5.0}  # nested mappings merge
    assert runs["memit"].config.output_dir == tmp_path / "study" / "memit"
    assert runs["memit"].config.name == "memit"
    assert [r.name for r in study_runs(study, ["encore"])] == ["encore"]
    with pytest.raises(ConfigError, match="no run named nope"):
        study_runs(study, ["nope"])


def test_bad_study_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nruns: {'../escape': {method: memit}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_study(bad)
    path = _study_file(tmp_path, {"memit": {"method": "memit", "num_edits": "many"}})
    with pytest.raises(ConfigError, match="run 'memit'.*num_edits"):
        study_runs(load_study(path))


def test_study_continues_unfinished_runs_and_collects_compact_results(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"Paragraph {i} says that the river runs past the old mill again." for i in range(40)))
    cpt = {"intervention": {"kind": "continued-pretraining", "model": "tiny-llama", "data": str(text), "steps": 4,
                            "batch_size": 2, "seq_len": 16, "record_every": 2}}
    study = load_study(_study_file(tmp_path, {"memit": {"method": "memit"},
                                              "encore": {"method": "encore", "hparams": {"norm_lambda": 5.0}},
                                              "cpt": cpt}))
    runs = {r.name: r for r in study_runs(study)}
    # memit is interrupted after one of its two steps; encore has not started.
    partial = run_experiment(runs["memit"].config, show_progress=False, max_steps=1)
    assert partial.completed_steps == 1
    # progress.json still says running; with no process in the directory the study calls it stopped
    assert RunStore(runs["memit"].run_dir).read_progress()["status"] == "running"
    assert run_state(runs["memit"]) == "stopped" and run_progress(runs["memit"]) == "2 of 4 edits"
    assert run_state(runs["encore"]) == "new" and run_progress(runs["cpt"]) == "0 of 4 steps"
    with RunStore(runs["memit"].run_dir).locked():  # a process working there now
        assert run_state(runs["memit"]) == "running"
        assert RunStore(runs["memit"].run_dir).holder().startswith(f"pid {os.getpid()} on ")
        left = run_study([runs["memit"]])["memit"]  # left to its holder, not reported as failed
        assert left["status"] == "running" and f"in use by pid {os.getpid()}" in left["message"]
    assert RunStore(runs["memit"].run_dir).holder() is None
    outcomes = run_study(list(runs.values()), log_dir=tmp_path / "logs")
    assert {name: o["status"] for name, o in outcomes.items()} == {n: "finished" for n in ("memit", "encore", "cpt")}
    assert all(run_state(r) == "finished" for r in runs.values())
    # the continued run equals an uninterrupted one
    fresh = runs["memit"].config.model_copy(update={"output_dir": tmp_path / "fresh"})
    run_experiment(fresh, show_progress=False)
    continued = [(r["step"], r["matrix"], r["fro"]) for r in RunStore(runs["memit"].run_dir).read("norms")]
    uninterrupted = [(r["step"], r["matrix"], r["fro"]) for r in RunStore(tmp_path / "fresh").read("norms")]
    assert continued == uninterrupted
    # a finished study is left alone
    assert run_study(list(runs.values()))["memit"]["message"] == "already finished"

    folder = collect_results(runs["memit"], tmp_path / "results")
    assert folder is not None
    assert not (folder / "ledger").exists() and not (folder / "state").exists()
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["method"] == "memit" and summary["n_edits"] == 4 and summary["n_steps"] == 2
    norms = pd.read_parquet(folder / "norms.parquet")
    assert len(norms) == len(RunStore(runs["memit"].run_dir).read("norms"))
    checkpoints = pd.read_parquet(folder / "checkpoints.parquet")
    assert {"fixed", "latest"} <= set(checkpoints["scope"].dropna())
    floors = checkpoints[checkpoints["name"] == "principal_angle_mean_deg_floor"]
    assert not floors.empty and (floors["step"] == 0).all()

    # the findings page reads the compact copies exactly as it reads run directories
    assert refresh_spectra(runs["memit"]) is not None and refresh_spectra(runs["cpt"]) is None
    folders = [collect_results(r, tmp_path / "results") for r in runs.values()]
    assert (tmp_path / "results" / "memit" / "spectra.parquet").exists()
    page = write_findings([f for f in folders if f is not None], tmp_path / "findings", title="tiny")
    text = page.read_text(encoding="utf-8")
    for claim in ("C1", "C2", "C3", "C4", "C5", "loop"):
        assert f"## {claim}:" in text
    found = json.loads((tmp_path / "findings" / "findings.json").read_text(encoding="utf-8"))
    verdicts = {v["claim"]: v["verdict"] for v in found["verdicts"]}
    assert set(verdicts.values()) <= {"shown", "partly shown", "not shown on this model", "not measured"}
    assert verdicts["C5"] != "not measured"  # a MEMIT and an ENCORE run are there
    memit = next(r for r in found["runs"] if r["name"] == "memit")
    curve = pd.read_parquet(folder / "norms.parquet")
    edited_end = curve[(curve["step"] == 2) & (curve["dist_from_init"] > 0)]["fro_rel"].mean()
    assert memit["numbers"]["fro_rel_mean_end"] == pytest.approx(edited_end, rel=1e-12)
    assert all((tmp_path / "findings" / name).stat().st_size > 1000 for name in FIGURES)
    assert memit["numbers"]["spectra"]["condition_number"]["end"] > 1


def test_fixed_retention_follows_the_same_facts(tmp_path):
    study = load_study(_study_file(tmp_path, {"memit": {"method": "memit", "num_edits": 6}}))
    (run,) = study_runs(study)
    run_experiment(run.config, show_progress=False)
    rows = [r for r in RunStore(run.run_dir).read("checkpoints") if r["scope"] == "fixed" and r["name"] == "efficacy_score"]
    assert [r["n_edits"] for r in rows] == [0, 2, 4, 6]


def test_spectra_are_rebuilt_from_the_ledger_at_checkpoints(tmp_path):
    from seqedit.models.tiny import build_tiny_model
    from seqedit.runner.spectra import run_spectra

    study = load_study(_study_file(tmp_path, {"memit": {"method": "memit"}}))
    (run,) = study_runs(study)
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    run_experiment(run.config, lm=lm, show_progress=False)
    final = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    fresh = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    rows = [json.loads(line) for line in run_spectra(run.run_dir, fresh).read_text().splitlines()]
    assert all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())  # model given back unchanged
    assert sorted({r["step"] for r in rows}) == [0, 1, 2]  # checkpoints every 2 edits, batches of 2
    assert {r["layer"] for r in rows} == {1, 2}
    last = {r["matrix"]: r for r in rows if r["step"] == 2}
    for matrix, row in last.items():
        expected = torch.linalg.svdvals(final[matrix + ".weight"].double())
        assert row["singular_values"] == pytest.approx(expected.tolist(), rel=1e-9)
        assert row["condition_number"] == pytest.approx(float(expected[0] / expected[-1]), rel=1e-9)
    first = {r["matrix"]: r for r in rows if r["step"] == 0}
    for matrix, row in first.items():
        assert row["sigma_max"] == pytest.approx(float(torch.linalg.svdvals(before[matrix + ".weight"].double())[0]))


def test_the_committed_findings_rebuild_from_the_committed_results(tmp_path):
    """scripts/build_findings.py reads only results/seed-findings: the page and the README table rebuild."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not any((root / "results" / "seed-findings").glob("*/progress.json")):
        pytest.skip("no committed study results")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- findings-table:start -->\nold\n<!-- findings-table:end -->\n"
                      "<!-- edits-table:start -->\n<!-- edits-table:end -->\n", encoding="utf-8")
    subprocess.run([sys.executable, str(root / "scripts" / "build_findings.py"), "--docs", str(tmp_path / "docs"),
                    "--readme", str(readme)], check=True, capture_output=True)
    page = (tmp_path / "docs" / "findings.md").read_text(encoding="utf-8")
    assert all(f"## {claim}:" in page for claim in ("C1", "C2", "C3", "C4", "C5", "loop"))
    table = readme.read_text(encoding="utf-8")
    assert "old" not in table and "| C2:" in table
    committed = (root / "README.md").read_text(encoding="utf-8")
    assert "| memit |" in table  # the editing runs side by side
    import json

    import yaml

    for run in (root / "results" / "seed-findings").glob("*/progress.json"):
        config = yaml.safe_load((run.parent / "config.yaml").read_text(encoding="utf-8"))
        progress = json.loads(run.read_text(encoding="utf-8"))
        if progress["status"] == "finished" and config.get("num_edits"):
            # a finished run gets the table at its own length, whatever shorter runs the study has
            assert f"After {config['num_edits']} edits" in table, run.parent.name
        elif config.get("num_edits"):  # one short of its plan says how far it got, never that it is running
            word = "failed" if progress["status"] == "failed" else "unfinished"
            assert f"{run.parent.name} ({progress['n_edits']} edits, {word})" in table, run.parent.name
    for line in table.splitlines():  # the committed README carries the tables the committed results give
        if line.startswith("| C") or line.startswith("| memit") or line.startswith("| encore"):
            assert line in committed, line
