
from .qpic import QPIC  # noqa: F401
