
from .hico_metric import HICODetMetric  # noqa: F401
