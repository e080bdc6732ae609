"""Slurm: every run of a benchmark is one task of a job array, plus a report job after it.

:func:`write_sbatch` writes ``<work_dir>/slurm/array.sbatch`` and ``report.sbatch``. Each array
task asks for one run's resources (``--gres=gpu:<gpus_per_run>``, ``--cpus-per-task`` 8 per GPU
unless ``extra`` sets it) and runs the benchmark command with ``--run-index i``: the i-th run of
the plan and nothing else, with the same resume/lock bookkeeping as a local sweep, exiting
non-zero when that run fails. ``--array=0-(N-1)%jobs`` bounds how many run at once (``--jobs``);
``report.sbatch`` runs ``--report-only``. ``sbatch --parsable array.sbatch`` then
``sbatch --dependency=afterany:<id> report.sbatch`` submits both (:func:`submit`). Reruns of the
array skip finished runs.
"""
import os
import os.path as osp
import shlex
import shutil
import subprocess
from typing import Dict, List, Optional

__all__ = ['write_sbatch', 'submit']


def _script(lines: List[str], directives: List[str], command: List[str]) -> str:
    return '\n'.join(['#!/usr/bin/env bash'] + [f'#SBATCH {d}' for d in directives] +
                     [''] + lines + [shlex.join(command)]) + '\n'


def _unless_given(directives: List[str], extra: List[str]) -> List[str]:
    """``directives`` minus the options that ``extra`` sets itself (``--cpus-per-task=16``)."""
    given = {e.split('=', 1)[0] for e in extra if e.startswith('--')}
    return [d for d in directives if d.split('=', 1)[0] not in given]


def write_sbatch(work_dir: str, name: str, num_runs: int, command: List[str], partition: str,
                 gpus_per_run: int = 1, cpus_per_run: Optional[int] = None,
                 max_parallel: Optional[int] = None, extra: Optional[List[str]] = None,
                 time_limit: Optional[str] = None) -> Dict[str, str]:
    """Write the array and report scripts; ``command`` is the benchmark command line without
    ``--run-index``/``--report-only`` (and without ``--jobs``: one run per task). Returns
    ``{'array': path, 'report': path}``."""
    if num_runs < 1:
        raise ValueError(f'a slurm array needs at least one run, the plan has {num_runs}')
    out = osp.join(osp.abspath(work_dir), 'slurm')
    os.makedirs(out, exist_ok=True)
    common = [f'--partition={partition}'] + ([f'--time={time_limit}'] if time_limit else []) + \
        list(extra or [])
    array = f'0-{num_runs - 1}' + (f'%{max_parallel}' if max_parallel else '')
    cpus = cpus_per_run or 8 * gpus_per_run
    directives = _unless_given([f'--job-name={name}', f'--array={array}', '--nodes=1',
                                '--ntasks=1', f'--gres=gpu:{gpus_per_run}',
                                f'--cpus-per-task={cpus}', f'--output={out}/run_%a.out'],
                               list(extra or [])) + common
    setup = ['set -e', f'cd {shlex.quote(os.getcwd())}',
             '# each array task is one (task, variant, seed) run on its own GPUs; it exits '
             'non-zero when the run fails; rerunning skips finished runs']
    paths = dict(array=osp.join(out, 'array.sbatch'), report=osp.join(out, 'report.sbatch'))
    with open(paths['array'], 'w') as f:
        f.write(_script(setup, directives, command + ['--run-index', '$SLURM_ARRAY_TASK_ID'])
                .replace("'$SLURM_ARRAY_TASK_ID'", '"$SLURM_ARRAY_TASK_ID"'))
    report = _unless_given([f'--job-name={name}-report', '--nodes=1', '--ntasks=1',
                            '--cpus-per-task=2', f'--output={out}/report.out'],
                           list(extra or [])) + common
    with open(paths['report'], 'w') as f:
        f.write(_script(setup[:2], report, command + ['--report-only']))
    return paths


def submit(paths: Dict[str, str]) -> str:
    """Submit the array, then the report job depending on it; return the array job id."""
    if shutil.which('sbatch') is None:
        raise FileNotFoundError('sbatch not found: submit the scripts on the cluster with '
                                f"sbatch {paths['array']} (then the report job)")
    job = subprocess.run(['sbatch', '--parsable', paths['array']], check=True,
                         capture_output=True, text=True).stdout.strip().split(';')[0]
    subprocess.run(['sbatch', f'--dependency=afterany:{job}', paths['report']], check=True)
    return job
