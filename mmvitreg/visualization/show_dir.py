"""``tools/test.py --show-dir DIR``: save a picture of the predictions of every test image."""
import os.path as osp

__all__ = ['enable_show_dir', 'is_hoi_config']


def _types(cfg) -> list:
    items = cfg if isinstance(cfg, (list, tuple)) else [cfg]
    return [item.get('type') for item in items if hasattr(item, 'get')]


def is_hoi_config(cfg) -> bool:
    """True for configs whose model predicts HOI triplets (``QPIC``, also as the host of
    ``Regularized``) or that are evaluated with ``HICODetMetric``."""
    model = cfg.get('model', None) or {}
    if 'QPIC' in (model.get('type'), model.get('host')):
        return True
    return 'HICODetMetric' in _types(cfg.get('test_evaluator', None) or [])


def enable_show_dir(cfg, show_dir: str) -> str:
    """Switch the config's visualization hook on and point it at ``show_dir``, as the
    ``--show-dir`` option of mmdet's and mmpretrain's ``tools/test.py`` does.

    Where we differ: the pictures go to ``show_dir`` itself (made absolute), not to
    ``work_dir/<timestamp>/show_dir``. HOI configs (:func:`is_hoi_config`) draw with
    :class:`HOILocalVisualizer` (top ``topk`` = 10 triplets of each image, no score threshold
    unless the config's ``default_hooks.visualization.score_thr`` sets one).

    Returns the absolute output folder.

    Raises:
        ValueError: for a config whose ``default_scope`` is neither ``mmdet`` nor
            ``mmpretrain``.
    """
    out_dir = osp.abspath(show_dir)
    scope = cfg.get('default_scope', None)
    hooks = cfg.get('default_hooks', None)
    if hooks is None:
        cfg.default_hooks = hooks = {}
    vis = dict(hooks.get('visualization', None) or {})
    if scope == 'mmdet':
        vis.setdefault('type', 'DetVisualizationHook')
        vis.update(draw=True, test_out_dir=out_dir)
        if is_hoi_config(cfg):
            vis.setdefault('score_thr', 0.0)
            visualizer = dict(cfg.get('visualizer', None) or {})
            visualizer.setdefault('name', 'visualizer')
            visualizer.setdefault('vis_backends', [dict(type='LocalVisBackend')])
            visualizer['type'] = 'HOILocalVisualizer'
            cfg.visualizer = visualizer
    elif scope == 'mmpretrain':
        vis.setdefault('type', 'VisualizationHook')
        vis.update(enable=True, out_dir=out_dir)
    else:
        raise ValueError(f"--show-dir needs a config with default_scope 'mmdet' or "
                         f"'mmpretrain', got {scope!r}")
    hooks['visualization'] = vis
    return out_dir
