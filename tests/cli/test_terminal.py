"""A clean terminal: third-party warnings filtered, seqedit's own on one line, --quiet silences bars."""

from __future__ import annotations

import os
import warnings

from rich.console import Console

from seqedit.cli.report import print_summary
from seqedit.cli.terminal import setup_terminal
from seqedit.utils.progress import PROGRESS_ENV, note, outer_display, progress_allowed


def _third_party_warning() -> None:
    # Attributed to a module named like transformers', as its own deprecation warnings are.
    exec(compile("import warnings\nwarnings.warn('`past_key_values` is deprecated', FutureWarning)",
                 "transformers/models/llama/modeling_llama.py", "exec"), {"__name__": "transformers.models.llama"})


def test_own_warnings_print_one_line_and_third_party_ones_are_filtered(capsys, monkeypatch):
    for name in (PROGRESS_ENV, "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    with warnings.catch_warnings():
        setup_terminal()
        warnings.warn("key statistics: corpus 'wikitext2' is unavailable;\n  using builtin-prose", UserWarning,
                      stacklevel=1)
        _third_party_warning()
        warnings.warn("Passing `past_key_values` as a tuple is deprecated", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: key statistics: corpus 'wikitext2' is unavailable; using builtin-prose"]
    assert os.environ.get("TRANSFORMERS_VERBOSITY") == "error"
    assert progress_allowed()


def test_verbose_shows_third_party_warnings_with_their_location(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        setup_terminal(verbose=True)
        _third_party_warning()
    err = capsys.readouterr().err.strip()
    assert err.startswith("FutureWarning: `past_key_values` is deprecated (transformers/models/llama/")
    assert len(err.splitlines()) == 1


def test_quiet_turns_every_progress_bar_off_and_inner_work_reports_to_the_outer_bar(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    seen: list[str] = []
    assert progress_allowed() and not progress_allowed(False)
    with outer_display(seen.append):
        assert not progress_allowed()  # the outer bar is the phase's one display
        note("key statistics, layers 3,4")
    assert seen == ["key statistics, layers 3,4"] and progress_allowed()
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with warnings.catch_warnings():
        setup_terminal(quiet=True)
    assert not progress_allowed() and os.environ["TQDM_DISABLE"] == "1"


def test_summary_prints_as_a_table_not_markdown(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("| run | efficacy | ‖W−W₀‖ |\n|---|---|---|\n| memit | 1.00 | 9.01 |\n| encore | .50 | 3.20 |\n")
    console = Console(record=True, width=100)
    print_summary(console, summary)
    text = console.export_text()
    assert "|---|" not in text and ("┃" in text or "│" in text)
    assert "memit" in text and "9.01" in text and "encore" in text
    narrow = Console(record=True, width=20)
    print_summary(narrow, summary)
    assert "efficacy" in narrow.export_text()  # transposed: one column per run
