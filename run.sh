#!/usr/bin/env bash
# The README's two commands:  bash run.sh quickstart   |   bash run.sh test
# Each creates .venv from the project's own files on first use.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SI_JAX_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/ruff" ] \
    || ! "$VENV/bin/python" -c "import si_jax, pytest, xdist" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test]"
fi
case "${1:-}" in
  quickstart)
    shift
    exec "$VENV/bin/python" -m si_jax.main --config=configs/quickstart.py \
      --workdir="${WORKDIR:-runs/quickstart}" "$@" ;;
  test)
    shift
    # lint first (the rules: pyproject.toml's [tool.ruff]); a finding fails the command
    "$VENV/bin/ruff" check si_jax tests experiments benchmarks configs tools
    exec "$VENV/bin/python" -m pytest -q -n 2 "$@" ;;
  *)
    echo "usage: bash run.sh quickstart [--config.FIELD=VALUE ...] | bash run.sh test [pytest args]" >&2
    exit 2 ;;
esac
