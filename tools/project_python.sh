# Sourced by the dist_*/slurm_* launchers: sets ROOT (the checkout) and PYTHON, the project's
# environment (.venv at the repo root, made by tools/setup_env.sh) when it exists; an explicit
# PYTHON=... wins.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
