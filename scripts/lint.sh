#!/usr/bin/env bash
# Static checks: ruff (style and common bugs) and mypy (types), both configured in pyproject.toml.
# Run after scripts/setup.sh, which installs both with the [dev] extra into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEQEDIT_VENV:-.venv}
"$VENV/bin/ruff" check src tests scripts benchmarks
"$VENV/bin/mypy" src
