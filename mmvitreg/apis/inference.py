"""HOI inference API, in the style of mmdet's ``init_detector`` / ``inference_detector``."""
import copy
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose

from mmvitreg.datasets.hico_det import HICODetDataset

__all__ = ['init_hoi_model', 'inference_hoi', 'hoi_test_pipeline', 'hoi_triplets']

ImageType = Union[str, np.ndarray]


def init_hoi_model(config: Union[str, Path, Config], checkpoint: Optional[str] = None,
                   device: str = 'cpu', cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build an HOI detector (e.g. ``QPIC``, also inside ``Regularized``) from a config, load a
    checkpoint and put it in eval mode on ``device``: mmdet's ``init_detector`` for HOI models
    (``model.cfg`` is the config; ``model.dataset_meta`` comes from the checkpoint or, when it
    has no ``verb_classes``, from the HICO-DET tables: ``classes``, ``verb_classes``,
    ``hoi_classes``). The backbone's ``init_cfg`` is dropped (no pretrained download).

    Args:
        config: config file or ``Config``.
        checkpoint: checkpoint file; ``None`` keeps the random initialisation.
        device: e.g. ``'cpu'``, ``'cuda:0'``.
        cfg_options: overrides merged into the config.

    Raises:
        FileNotFoundError: config or checkpoint file missing.
    """
    from mmdet.registry import MODELS
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import mmvitreg  # noqa: F401  (registers the HOI types)
    if isinstance(config, (str, Path)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config file not found: {config}')
        config = Config.fromfile(str(config))
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    config = copy.deepcopy(config)
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if 'backbone' in config.model:
        config.model.backbone.init_cfg = None
    init_default_scope(config.get('default_scope', 'mmdet'))
    model = revert_sync_batchnorm(MODELS.build(config.model))
    meta = {}
    if checkpoint is not None:
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
        meta = {k.lower(): v for k, v in ckpt.get('meta', {}).get('dataset_meta', {}).items()}
    if 'verb_classes' not in meta:
        meta.update({k: list(v) for k, v in HICODetDataset.METAINFO.items()})
    model.dataset_meta = meta
    model.cfg = config
    model.to(device)
    model.eval()
    return model


def hoi_test_pipeline(cfg: Config, from_array: bool = False) -> List[dict]:
    """The config's test pipeline for images without annotations: ``LoadHOIAnnotations`` is
    dropped, and for arrays ``LoadImageFromFile`` becomes mmdet's ``LoadImageFromNDArray``."""
    dataset = cfg.test_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:  # wrappers
        dataset = dataset.dataset
    pipeline = [copy.deepcopy(t) for t in dataset.pipeline
                if t['type'] not in ('LoadHOIAnnotations', 'mmvitreg.LoadHOIAnnotations')]
    if from_array and pipeline and 'LoadImageFromFile' in pipeline[0]['type']:
        pipeline[0] = dict(pipeline[0], type='mmdet.LoadImageFromNDArray')
    return pipeline


def inference_hoi(model: torch.nn.Module, images: Union[ImageType, Sequence[ImageType]]):
    """Run an HOI detector on image files or BGR arrays (as mmdet's ``inference_detector``).

    Returns a ``DetDataSample`` per image (a list for a list input) whose ``pred_hoi`` holds
    the top-K triplets in original image pixels: ``sub_bboxes``, ``obj_bboxes``,
    ``obj_labels`` (0..79), ``verb_labels`` (0..116), ``scores`` (docs/DESIGN.md); see
    :func:`hoi_triplets` for named, sorted triplets.
    """
    from mmengine.registry import init_default_scope
    batch = isinstance(images, (list, tuple))
    images = list(images) if batch else [images]
    if not images:
        raise ValueError('inference_hoi needs at least one image')
    init_default_scope(model.cfg.get('default_scope', 'mmdet'))
    pipelines = {}
    results = []
    for image in images:
        from_array = isinstance(image, np.ndarray)
        if not from_array and not Path(image).is_file():
            raise FileNotFoundError(f'image file not found: {image}')
        if from_array not in pipelines:
            pipelines[from_array] = Compose(hoi_test_pipeline(model.cfg, from_array))
        data = dict(img=image, img_id=0) if from_array else dict(img_path=str(image), img_id=0)
        data = pipelines[from_array](data)
        data = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
        with torch.no_grad():
            results.append(model.test_step(data)[0])
    return results if batch else results[0]


def hoi_triplets(data_sample, topk: int = 10, score_thr: float = 0.0,
                 dataset_meta: Optional[dict] = None) -> List[dict]:
    """The top triplets of a predicted ``data_sample`` as dicts, by decreasing score:
    ``verb``, ``object`` (names), ``score``, ``sub_bbox``, ``obj_bbox`` (x1, y1, x2, y2)."""
    from mmvitreg.datasets.hico_meta import hico_meta
    from mmvitreg.visualization import select_triplets
    trip = select_triplets(data_sample.pred_hoi, topk, score_thr)
    meta = dataset_meta or {}
    verbs = meta.get('verb_classes') or hico_meta().verb_names
    objects = meta.get('classes') or hico_meta().object_names
    return [dict(verb=verbs[int(v)], object=objects[int(o)], score=float(s),
                 sub_bbox=[round(float(x), 2) for x in sb],
                 obj_bbox=[round(float(x), 2) for x in ob])
            for v, o, s, sb, ob in zip(trip['verb_labels'], trip['obj_labels'], trip['scores'],
                                       trip['sub_bboxes'], trip['obj_bboxes'])]
