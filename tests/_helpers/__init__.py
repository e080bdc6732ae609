"""Shared test helpers (constants, running the repo's tools in a subprocess)."""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS_CONFIG = osp.join(REPO, 'configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py')
# Shrinks the digits demo config to seconds: 64 train / 32 test images, batch 16.
TINY_DIGITS_OPTIONS = [
    'train_dataloader.dataset.num_samples=64', 'val_dataloader.dataset.num_samples=32',
    'test_dataloader.dataset.num_samples=32', 'train_dataloader.batch_size=16',
    'val_dataloader.batch_size=32', 'test_dataloader.batch_size=32',
]


def run_tool(args: List[str], cwd: Optional[str] = None, timeout: int = 600,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``python <args>`` (a tool of this repo) and return the completed process."""
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '2')
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable] + args, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
