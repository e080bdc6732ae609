
from .attention_collapse_hook import AttentionCollapseHook  # noqa: F401
from .dropkey_hook import DropKeyScheduleHook  # noqa: F401
from .peak_memory_hook import PeakMemoryHook  # noqa: F401
from .rng_state_hook import RNGStateHook  # noqa: F401
from .safe_checkpoint_hook import SafeCheckpointHook  # noqa: F401
from .train_check_hook import TrainLoopCheckHook  # noqa: F401
