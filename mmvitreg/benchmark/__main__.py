"""``python -m mmvitreg.benchmark PRESET_OR_SUITE [options]`` (see :mod:`.cli`)."""
from .cli import run

run()
