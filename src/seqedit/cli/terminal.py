"""What the terminal shows: third-party warnings filtered, seqedit's own warnings on one line, progress
bars silenced by ``--quiet``; ``--verbose`` shows everything (with the warning's source location).

Called once per command at the CLI boundary (the library itself never changes global warning state)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TextIO

from seqedit.utils.progress import PROGRESS_ENV

# Libraries whose warnings are about their own internals or deprecations a user cannot act on.
THIRD_PARTY = r"(transformers|torch|huggingface_hub|peft|gguf|safetensors|accelerate|tokenizers|pandas|matplotlib|pyarrow|tqdm|lm_eval|datasets|mlflow|tensorboard|wandb)(\.|$)"
# Known messages raised from inside those libraries but attributed to the caller's line (stacklevel).
KNOWN_MESSAGES = (
    r".*past_key_values.*",
    r".*`torch_dtype` is deprecated.*",
    r".*TypedStorage is deprecated.*",
    r".*generation flags are not valid.*",
)


def _one_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: TextIO | None = None, line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def _with_location(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: TextIO | None = None, line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    print(f"{category.__name__}: {text} ({filename}:{lineno})", file=file or sys.stderr)


def setup_terminal(*, quiet: bool = False, verbose: bool = False) -> None:
    """Configure warnings, library logging and progress bars for one CLI invocation."""
    if quiet:
        os.environ[PROGRESS_ENV] = "0"
        # Libraries' own tqdm bars (e.g. transformers' GGUF conversion): tqdm reads TQDM_* defaults when it
        # is first imported, which in the CLI happens after this point.
        os.environ["TQDM_DISABLE"] = "1"
    warnings.showwarning = _with_location if verbose else _one_line
    if verbose:
        return
    warnings.filterwarnings("ignore", module=THIRD_PARTY)
    for pattern in KNOWN_MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    _quiet_library_logging()


def _quiet_library_logging() -> None:
    """transformers and huggingface_hub log deprecation notes and draw a bar on every weight load. Set
    through their environment variables (read when they are imported), so commands stay fast to start."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (tests, notebooks): set it directly
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
