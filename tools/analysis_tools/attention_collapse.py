#!/usr/bin/env python
"""Attention collapse (DeepViT, Eq. 4): cross-layer similarity of a model's attention maps.

Runs the model of CONFIG (weights from CHECKPOINT, or freshly initialised without one) on the
first ``--num-batches`` batches of the config's validation (or ``--split``) loader, averages
the per-head, per-token cosine similarity of the attention-map columns of every layer pair over
tokens, heads and images, prints the ``L x L`` matrix and writes into ``--out-dir``:
``similarity.png`` (heat map), ``similarity.npy`` (``(L, L, H)``, per head) and
``similarity.json`` (head-averaged matrix + summary).

Examples::

    python tools/analysis_tools/attention_collapse.py configs/deepvit/deepvit-s_8xb32_in1k.py \
        ckpt.pth --num-batches 8 --out-dir work_dirs/collapse_deepvit_s
    python tools/analysis_tools/attention_collapse.py \
        configs/vit/vit-tiny-p4_1xb32-15e_digits-16px.py --num-batches 2 --out-dir /tmp/collapse
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.cli import CLIError, DictAction, load_config, one_line_errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config (mmpretrain/mmdet)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint (default: freshly initialised weights)')
    parser.add_argument('--num-batches', type=int, default=4, help='batches to average over')
    parser.add_argument('--out-dir', default=None,
                        help='output folder (default work_dirs/attention_collapse/<config>)')
    parser.add_argument('--split', choices=['val', 'test', 'train'], default='val',
                        help="which dataloader of the config to use (train: no shuffling)")
    parser.add_argument('--batch-size', type=int, default=None, help='override the batch size')
    parser.add_argument('--target', default='',
                        help='only attention modules under this module path, e.g. backbone')
    parser.add_argument('--stage', choices=['reattention', 'softmax'], default='reattention',
                        help='Re-attention layers: re-generated maps or the softmax before them')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        import torch
        from mmengine.runner import Runner

        from mmvitreg.engine.hooks.attention_collapse_hook import collapse_summary
        from mmvitreg.utils.attention_maps import (SimilarityAccumulator, build_model_for_analysis,
                                                   collect_attention_maps, format_similarity,
                                                   save_similarity_heatmap)
        if args.num_batches < 1:
            raise CLIError(f'--num-batches must be >= 1, got {args.num_batches}')
        cfg = load_config(args.config, args.cfg_options)
        loader_cfg = cfg.get(f'{args.split}_dataloader')
        if not loader_cfg:
            raise CLIError(f'config {args.config} has no {args.split}_dataloader')
        loader_cfg = dict(loader_cfg)
        loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False)
        loader_cfg['num_workers'] = min(int(loader_cfg.get('num_workers', 0)), 2)
        loader_cfg['persistent_workers'] = False
        if args.batch_size:
            loader_cfg['batch_size'] = args.batch_size
        model = build_model_for_analysis(cfg, args.checkpoint, args.device)
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        acc = SimilarityAccumulator()
        with torch.no_grad():
            for i, data in enumerate(loader):
                if i >= args.num_batches:
                    break
                inputs = model.data_preprocessor(data, False)['inputs']
                acc.update(collect_attention_maps(model, inputs, args.target, args.stage))
        sim = acc.result()
        summary = collapse_summary(sim)
        out_dir = args.out_dir or osp.join(
            'work_dirs', 'attention_collapse', osp.splitext(osp.basename(args.config))[0])
        os.makedirs(out_dir, exist_ok=True)
        print(f'cross-layer attention similarity: {sim.shape[0]} layers, {sim.shape[2]} heads, '
              f'{acc.count} images (mean over heads and tokens)')
        print(format_similarity(sim))
        print(f'adjacent layers: {summary["adjacent"]:.3f}   deeper half: '
              f'{summary["last_half"]:.3f}')
        import numpy as np
        np.save(osp.join(out_dir, 'similarity.npy'), sim.numpy())
        with open(osp.join(out_dir, 'similarity.json'), 'w') as f:
            json.dump(dict(config=args.config, checkpoint=args.checkpoint, images=acc.count,
                           stage=args.stage, summary=summary,
                           similarity=sim.mean(-1).tolist()), f, indent=1)
        png = save_similarity_heatmap(
            sim, osp.join(out_dir, 'similarity.png'),
            title=osp.splitext(osp.basename(args.config))[0])
        print(f'heat map saved to {png}')


if __name__ == '__main__':
    main()
