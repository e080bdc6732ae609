#!/usr/bin/env python
"""Compile DropKey's Triton kernels for an NVIDIA GPU on any machine (no GPU needed).

For each attention call the shipped configs make on the Triton path (DETR / QPIC encoder and
decoder with key padding and attention dropout, PlainViT with its trainable bias, all fp32 as
configured; ViT-B in fp16 AMP), Triton's compiler and the ptxas it ships build every kernel the
call launches -- forward, dK/dV, dQ, and the variants with per-row flags -- for each ``--arch``
(compute capability), exactly as the first launch on that GPU would, and print what ptxas
assigned: shared memory (against the GPU's per-block limit: beyond it a launch fails), registers
per thread and stack bytes (spilled registers: a slow kernel). Exits 1 if a kernel does not
compile or does not fit.

Examples::

    python tools/analysis_tools/dropkey_triton_build.py                   # sm_90 (H100/H200)
    python tools/analysis_tools/dropkey_triton_build.py --arch 80 90 --json builds.json
    python tools/analysis_tools/dropkey_triton_build.py --call detr-encoder \
        --config 64 32 4 2                                      # other tiles / warps / stages
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import CLIError, one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    from mmvitreg.ops.dropkey.triton_aot import SHARED_MEMORY_LIMIT, SHIPPED_CALLS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', type=int, nargs='+', default=[90],
                        help=f'compute capabilities (known: {sorted(SHARED_MEMORY_LIMIT)})')
    parser.add_argument('--call', nargs='+', default=list(SHIPPED_CALLS),
                        help=f'which calls (default all: {", ".join(SHIPPED_CALLS)})')
    parser.add_argument('--config', nargs='+', default=None,
                        metavar='HELD STREAMED [WARPS STAGES [FP32_DOTS]]',
                        help='a TritonConfig instead of the default for each call')
    parser.add_argument('--ratio', type=float, default=0.1, help='DropKey ratio of the calls')
    parser.add_argument('--json', default=None, help='also write the builds to this file')
    args = parser.parse_args(argv)
    unknown = [a for a in args.arch if a not in SHARED_MEMORY_LIMIT]
    if unknown:
        raise CLIError(f'unknown --arch {unknown}: known {sorted(SHARED_MEMORY_LIMIT)}')
    unknown = [c for c in args.call if c not in SHIPPED_CALLS]
    if unknown:
        raise CLIError(f'unknown --call {unknown}: known {", ".join(SHIPPED_CALLS)}')
    return args


def _config(values):
    if values is None:
        return None
    from mmvitreg.ops.dropkey.triton_flash import make_config
    try:
        return make_config([int(x) if x.isdigit() else x for x in values])
    except ValueError as err:
        raise CLIError(str(err)) from None


def main(argv=None) -> int:
    from mmvitreg.ops.dropkey.triton_aot import SHARED_MEMORY_LIMIT, compile_shipped_call
    from mmvitreg.ops.dropkey.triton_flash import triton_available
    with one_line_errors():
        args = parse_args(argv)
        config = _config(args.config)
        if not triton_available():
            raise CLIError('Triton is not installed (it ships with torch\'s CUDA builds)')
    rows, bad = [], 0
    print(f'{"arch":>4} {"call":<19} {"kernel":<12} {"features":<26} {"warps":>5} '
          f'{"stages":>6} {"shared KiB":>10} {"regs":>5} {"stack B":>7} {"compile s":>9}')
    for arch in args.arch:
        for call in args.call:
            try:
                builds = compile_shipped_call(arch, call, ratio=args.ratio, config=config)
            except Exception as err:  # a compile error of one call: report, go on, exit 1
                print(f'{arch:>4} {call:<19} failed: {type(err).__name__}: {str(err)[:300]}')
                bad += 1
                continue
            for b in builds:
                limit = SHARED_MEMORY_LIMIT[arch] // 1024
                flag = '' if b.fits else f'  > {limit} KiB: does not fit'
                print(f'{arch:>4} {call:<19} {b.kernel:<12} {b.features:<26} {b.num_warps:>5} '
                      f'{b.num_stages:>6} {b.shared / 1024:>10.0f} {b.registers:>5} '
                      f'{b.stack:>7} {b.seconds:>9.2f}{flag}')
                bad += not b.fits
                rows.append(dict(b.as_dict(), call=call))
    spilled = sum(r['stack'] > 0 for r in rows)
    print(f'{len(rows)} kernels, {spilled} with spilled registers (stack > 0), {bad} failed or '
          f'over the shared-memory limit')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
