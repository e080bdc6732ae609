#!/usr/bin/env python
"""Convert an official DETR checkpoint (facebookresearch/detr) into mmvitreg's QPIC model.

The QPIC paper starts HICO-DET training from Facebook's DETR-R50 (500 epochs, 42.0 COCO AP,
``detr-r50-e632da11.pth``), prepared by the official ``convert_parameters.py``
(hitachi-rd-cv/qpic): the object classifier takes the 80 COCO rows of DETR's 92-row
``class_embed`` plus its no-object row, and DETR's box MLP initialises both the subject and the
object box MLP; the verb classifier starts from scratch. This tool does the same mapping into the
parameter names of :class:`mmvitreg.models.QPIC` (mmdet ``DETR`` + ``QPICHead``)::

    wget https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth -P checkpoints/
    python tools/model_converters/detr_to_qpic.py checkpoints/detr-r50-e632da11.pth \\
        checkpoints/detr-r50-e632da11_qpic.pth

The output is an mmengine checkpoint (``state_dict``) for ``load_from`` (non-strict load: only
``bbox_head.fc_verb_cls.*`` is missing, as in the official non-strict load). Frozen
BatchNorm statistics get a ``num_batches_tracked`` of 0 so every backbone buffer is present.

The mapping is the pure function :func:`convert_detr_to_qpic` (importable; used by the tests).
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmvitreg.utils.checkpoint import load_official_checkpoint  # noqa: E402

#: DETR's class layer has 92 rows: COCO's 91-id space (0 unused) + no-object (row 91).
DETR_NUM_ROWS = 92
DETR_NO_OBJECT_ROW = 91

# (official regex, QPIC/mmdet replacement), applied to keys without a `module.` prefix.
_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    # ResNet-50 (torchvision names inside IntermediateLayerGetter); FrozenBatchNorm2d buffers
    (r'^backbone\.0\.body\.(.+)$', r'backbone.\1'),
    (r'^input_proj\.(weight|bias)$', r'neck.convs.0.conv.\1'),
    # encoder layer: self_attn, norm1, linear1 -> ReLU -> linear2, norm2 (post-norm)
    (r'^transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)$',
     r'encoder.layers.\1.self_attn.attn.\2'),
    (r'^transformer\.(en|de)coder\.layers\.(\d+)\.linear1\.(weight|bias)$',
     r'\1coder.layers.\2.ffn.layers.0.0.\3'),
    (r'^transformer\.(en|de)coder\.layers\.(\d+)\.linear2\.(weight|bias)$',
     r'\1coder.layers.\2.ffn.layers.1.\3'),
    # decoder layer: self_attn, norm1, multihead_attn (cross), norm2, FFN, norm3
    (r'^transformer\.decoder\.layers\.(\d+)\.self_attn\.(.+)$',
     r'decoder.layers.\1.self_attn.attn.\2'),
    (r'^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.(.+)$',
     r'decoder.layers.\1.cross_attn.attn.\2'),
    (r'^transformer\.(en|de)coder\.layers\.(\d+)\.norm([123])\.(weight|bias)$', None),
    (r'^transformer\.decoder\.norm\.(weight|bias)$', r'decoder.post_norm.\1'),
    (r'^query_embed\.weight$', 'query_embedding.weight'),
]]
# official MLP(d, d, 4, 3): layers.0 -> ReLU -> layers.1 -> ReLU -> layers.2
_BOX = {'0': 'reg_ffn.layers.0.0', '1': 'reg_ffn.layers.1', '2': 'fc_reg'}
_BOX_KEY = re.compile(r'^bbox_embed\.layers\.([012])\.(weight|bias)$')
_CLASS_KEY = re.compile(r'^class_embed\.(weight|bias)$')
_BN_STAT = re.compile(r'^(backbone\..*)\.running_var$')


def _norm_key(match: 're.Match') -> str:
    part, layer, index, name = match.groups()
    return f'{part}coder.layers.{layer}.norms.{int(index) - 1}.{name}'


def coco80_rows() -> List[int]:
    """DETR class rows of the 80 contiguous COCO labels (the dataset's label order), then the
    no-object row: the official ``obj_ids`` of ``convert_parameters.py``."""
    from mmvitreg.datasets.hico_meta import hico_meta
    return [int(i) for i in hico_meta().coco91_ids] + [DETR_NO_OBJECT_ROW]


def convert_detr_to_qpic(state_dict: Mapping[str, torch.Tensor],
                         obj_rows: Optional[Sequence[int]] = None,
                         head_prefix: str = 'bbox_head.') -> 'OrderedDict[str, torch.Tensor]':
    """Map an official DETR state dict to QPIC keys.

    Args:
        state_dict: the ``model`` entry of an official DETR checkpoint (a leading ``module.``
            from DDP is stripped).
        obj_rows: rows of ``class_embed`` that become the object classifier, no-object last;
            default :func:`coco80_rows` (HICO-DET's 80 objects, as the official script).
        head_prefix: prefix of the QPIC head parameters.

    Raises:
        KeyError: for keys the mapping does not know (not a DETR checkpoint, e.g. a
            segmentation or QPIC one) or missing head keys.
        ValueError: when ``class_embed`` does not have the rows ``obj_rows`` needs.
    """
    obj_rows = coco80_rows() if obj_rows is None else list(obj_rows)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown, seen_class, seen_box = [], set(), set()
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        match = _CLASS_KEY.match(key)
        if match:
            if value.shape[0] <= max(obj_rows):
                raise ValueError(f'class_embed.{match.group(1)} has {value.shape[0]} rows; the '
                                 f'object rows need {max(obj_rows) + 1} (official DETR: '
                                 f'{DETR_NUM_ROWS})')
            out[f'{head_prefix}fc_obj_cls.{match.group(1)}'] = value[obj_rows].clone()
            seen_class.add(match.group(1))
            continue
        match = _BOX_KEY.match(key)
        if match:
            for who in ('sub', 'obj'):
                name = f'{who}_{_BOX[match.group(1)]}'
                out[f'{head_prefix}{name}.{match.group(2)}'] = value.clone()
            seen_box.add(match.groups())
            continue
        for pattern, repl in _RULES:
            match = pattern.match(key)
            if match:
                new = _norm_key(match) if repl is None else pattern.sub(repl, key)
                out[new] = value
                break
        else:
            unknown.append(key)
            continue
        stat = _BN_STAT.match(new)
        if stat:  # frozen BN has no counter; mmdet's BN buffers include one
            out[f'{stat.group(1)}.num_batches_tracked'] = torch.tensor(0, dtype=torch.long)
    if unknown:
        raise KeyError(f'not an official DETR checkpoint: unknown keys {unknown[:5]}'
                       f'{" ..." if len(unknown) > 5 else ""}')
    missing = [f'class_embed.{n}' for n in ('weight', 'bias') if n not in seen_class]
    missing += [f'bbox_embed.layers.{i}.{n}' for i in '012' for n in ('weight', 'bias')
                if (i, n) not in seen_box]
    if missing:
        raise KeyError(f'not an official DETR checkpoint: missing keys {missing}')
    return out


def extract_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """The weights of an official checkpoint (``model``); a bare state dict is returned as is."""
    if 'model' in checkpoint:
        return checkpoint['model']
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict']
    return checkpoint


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='official DETR checkpoint, e.g. detr-r50-e632da11.pth')
    parser.add_argument('dst', help='output path (mmengine checkpoint for load_from)')
    args = parser.parse_args(argv)
    try:
        converted = convert_detr_to_qpic(extract_state_dict(load_official_checkpoint(args.src)))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f'error: {msg}', file=sys.stderr)
        sys.exit(1)
    torch.save(dict(state_dict=converted,
                    meta=dict(source=osp.basename(args.src), converter='detr_to_qpic')),
               args.dst)
    print(f'converted {len(converted)} tensors -> {args.dst}')


if __name__ == '__main__':
    main()
