"""Options generated from pydantic configs (cli/options.py): defaults and help come from the config, lists
are comma-separated, rejected values are usage errors naming the option; the real commands pass their
configs' own defaults when no option is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from seqedit.cli.options import build_config, config_options, config_values


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("tiny", description="Which model.")
    layers: list[int] = Field([-2, -1], description="Edited layers.")
    kind: Literal["a", "b"] = Field("a", description="The kind.")
    rate: float = Field(0.5, gt=0, description="A positive rate.")
    out: Path | None = Field(None, description="Where to write.")
    loud: bool = Field(False, description="Say more.")


FLAGS = {"name": ["--name", "-n"]}


def _app(seen: list[_Settings]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_options(_Settings, flags=FLAGS)
    def main(extra: int = 0, **settings: Any) -> None:
        seen.append(build_config(_Settings, config_values(_Settings, settings, FLAGS), FLAGS))

    return app


def test_no_options_give_the_config_defaults_and_options_set_fields() -> None:
    seen: list[_Settings] = []
    app = _app(seen)
    assert CliRunner().invoke(app, []).exit_code == 0
    assert seen[-1] == _Settings.model_validate({})
    result = CliRunner().invoke(app, ["-n", "big", "--layers", "3, 4", "--kind", "b", "--rate", "2", "--out", "x",
                                      "--loud", "--extra", "1"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == _Settings.model_validate(
        {"name": "big", "layers": [3, 4], "kind": "b", "rate": 2.0, "out": Path("x"), "loud": True}
    )


def test_help_shows_the_configs_descriptions_and_defaults() -> None:
    result = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for text in ("Which model.", "Edited layers. Comma-separated integers.", "A positive rate.", "-2,-1",
                 "--no-loud", "--extra"):
        assert text in result.output, text


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--rate", "0"], "--rate"), (["--layers", "x,1"], "--layers"), (["--kind", "c"], "--kind"),
     (["--layers", ","], "--layers")],
)
def test_rejected_values_are_usage_errors_naming_the_option(args: list[str], named: str) -> None:
    result = CliRunner().invoke(_app([]), args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 2 and named in result.output, result.output


class _Captured(Exception):
    def __init__(self, config: Any) -> None:
        super().__init__("captured")
        self.config = config


def test_intervene_without_options_runs_the_configs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import seqedit.intervene
    from seqedit.cli.intervene import app
    from seqedit.intervene import InterventionConfig

    def capture(cfg: InterventionConfig, resume: bool) -> None:
        assert not resume
        raise _Captured(cfg)

    monkeypatch.setattr(seqedit.intervene, "run_intervention", capture)
    result = CliRunner().invoke(app, [])
    assert isinstance(result.exception, _Captured)
    assert result.exception.config == InterventionConfig.model_validate({})
    result = CliRunner().invoke(app, ["--kind", "lora", "-o", "runs/x", "--lora-layers", "1,2", "--no-spectral"])
    assert isinstance(result.exception, _Captured)
    assert result.exception.config == InterventionConfig.model_validate(
        {"kind": "lora", "output_dir": Path("runs/x"), "lora_layers": [1, 2], "spectral": False}
    )


def test_mend_train_without_options_trains_with_the_configs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import seqedit.editors.mend.train
    import seqedit.models
    from seqedit.cli.mend import app
    from seqedit.editors.mend.train import MendTrainConfig

    def capture(_lm: object, cfg: MendTrainConfig, resume: bool) -> None:
        raise _Captured(cfg)

    monkeypatch.setattr(seqedit.models, "load", lambda name, device: object())
    monkeypatch.setattr(seqedit.editors.mend.train, "MendTrainer", capture)
    result = CliRunner().invoke(app, ["train"])
    assert isinstance(result.exception, _Captured)
    assert result.exception.config == MendTrainConfig.model_validate({})
    # --max-minutes 0 means no limit; a checkpoint is saved at every validation.
    result = CliRunner().invoke(app, ["train", "--max-minutes", "0", "--eval-every", "7", "--stats-warmup", "3"])
    assert isinstance(result.exception, _Captured)
    assert result.exception.config == MendTrainConfig.model_validate(
        {"max_minutes": None, "eval_every": 7, "save_every": 7, "stats_warmup": 3}
    )


def test_a_commands_own_options_keep_their_help_and_limits() -> None:
    """The options a command declares itself (not generated from the config) keep their Option metadata."""
    from seqedit.cli.intervene import app

    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0
    for text in ("YAML file with InterventionConfig fields", "torch CPU threads", "newest saved state"):
        assert text in shown.output, text
    refused = CliRunner().invoke(app, ["--threads", "-1"])
    assert refused.exit_code == 2 and "greater than or equal to 0" in refused.output
