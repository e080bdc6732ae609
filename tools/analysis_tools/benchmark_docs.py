#!/usr/bin/env python
"""Write the generated benchmark sections of the recipe docs from the presets themselves.

Each ``docs/recipes/*.md`` section between ``<!-- generated: benchmark PRESET ... -->`` and
``<!-- end generated -->`` is rewritten from the named presets and suites of
``configs/benchmark`` (what each variant trains, what it is compared with, the question each
comparison asks); ``<!-- generated: benchmark-index -->`` lists every preset and suite. See
:mod:`mmvitreg.benchmark.docs`. Examples::

    python tools/analysis_tools/benchmark_docs.py            # rewrite the sections
    python tools/analysis_tools/benchmark_docs.py --check    # exit 1 if one is stale
    python tools/analysis_tools/benchmark_docs.py --describe coco_detr_dropkey   # print one
"""
import argparse
import glob
import os.path as osp
import sys
import warnings

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('docs', nargs='*', help='markdown files (default: docs/recipes/*.md)')
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 naming the files whose sections are stale')
    parser.add_argument('--describe', nargs='+', metavar='PRESET',
                        help='print the sections of these presets/suites of configs/benchmark')
    args = parser.parse_args()
    from mmvitreg.benchmark.docs import describe, described_in, regenerate
    bench = osp.join(REPO, 'configs', 'benchmark')
    if args.describe:
        print('\n\n'.join(describe(osp.basename(n), bench, REPO) for n in args.describe))
        return 0
    recipes = sorted(glob.glob(osp.join(REPO, 'docs', 'recipes', '*.md')))
    docs = args.docs or recipes
    described = described_in(recipes)  # the index links the recipe doc describing each preset
    stale = []
    for doc in docs:
        with open(doc, encoding='utf-8') as f:
            text = f.read()
        new = regenerate(text, bench, REPO, described)
        if new != text:
            stale.append(doc)
            if not args.check:
                with open(doc, 'w', encoding='utf-8') as f:
                    f.write(new)
    verb = 'stale' if args.check else 'rewritten'
    print(f'{verb}: ' + ', '.join(osp.relpath(d, REPO) for d in stale) if stale else
          'up to date')
    return 1 if stale and args.check else 0


if __name__ == '__main__':
    sys.exit(main())
