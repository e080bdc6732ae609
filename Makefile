# The two quickstart commands (each sets up .venv first; the set-up is idempotent):
#   make demo   - the main job: the regularizer benchmark on embedded default data
#   make test   - the test suite (what CI runs via .ci/run)
PY := .venv/bin/python
PYTEST_ARGS ?= -q

.PHONY: setup demo test test-all lint

setup:
	bash tools/setup_env.sh

# 3 tasks (digit classification, detection, HOI) x 3 variants x 3 seeds, JOBS runs at once
JOBS ?= 2
demo: setup
	$(PY) tools/benchmark_regularizers.py configs/benchmark/suite_digits_cpu.py --jobs $(JOBS) --work-dir work_dirs/suite_digits_cpu

test: setup lint
	$(PY) -m pytest tests $(PYTEST_ARGS) --timeout=1200

# pyflakes + pycodestyle (ruff) and import order (isort); settings in pyproject.toml
lint: setup
	$(PY) -m ruff check .
	$(PY) -m isort --check-only --diff .

# including the slow end-to-end runs
test-all: setup
	MMVITREG_SLOW=1 $(PY) -m pytest tests $(PYTEST_ARGS) --timeout=3600
