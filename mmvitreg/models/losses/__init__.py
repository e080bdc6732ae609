
from . import drloc  # noqa: F401
