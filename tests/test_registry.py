"""mmvitreg types are found from mmpretrain- and mmdet-scoped configs, also when nested."""
import pytest
import torch
from mmengine.registry import DefaultScope, init_default_scope

import mmvitreg
from mmvitreg.registry import DATASETS, MODELS


def test_version_and_registration():
    assert isinstance(mmvitreg.__version__, str)
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import DATASETS as CLS_DATASETS
    from mmpretrain.registry import MODELS as CLS_MODELS
    assert CLS_MODELS.get('Regularized') is not None and DET_MODELS.get('Regularized') is not None
    assert CLS_DATASETS.get('DigitsDataset') is not None
    assert 'Regularized' in MODELS


TINY_VIT = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                img_size=32, patch_size=8)


def test_build_from_mmpretrain_scope():
    init_default_scope('mmpretrain')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(type='Regularized', host='VisionTransformer', **TINY_VIT))
    from mmpretrain.models import VisionTransformer
    assert type(model) is VisionTransformer
    assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 32)


def test_build_from_mmdet_scope_and_nested_in_other_toolbox():
    from mmdet.registry import MODELS as DET_MODELS
    init_default_scope('mmdet')
    with DefaultScope.overwrite_default_scope('mmdet'):
        # an mmvitreg type directly in an mmdet config, hosting a scoped mmpretrain type
        backbone = DET_MODELS.build(
            dict(type='Regularized', host='mmpretrain.VisionTransformer', **TINY_VIT))
        # an unprefixed mmvitreg type nested inside an ``mmpretrain.`` model of an mmdet config:
        # mmengine resolves unprefixed names in the config's default scope (mmdet), where
        # mmvitreg types exist too (stock mmpretrain names need the ``mmpretrain.`` prefix there)
        classifier = DET_MODELS.build(dict(
            type='mmpretrain.ImageClassifier',
            data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'),
            backbone=dict(type='Regularized', host='mmpretrain.VisionTransformer', **TINY_VIT),
            head=dict(type='mmpretrain.LinearClsHead', num_classes=3, in_channels=32)))

    assert type(backbone).__name__ == 'VisionTransformer'
    assert type(classifier.backbone).__name__ == 'VisionTransformer'


def test_dataset_from_both_scopes():
    from mmdet.registry import DATASETS as DET_DATASETS
    init_default_scope('mmdet')
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DET_DATASETS.build(dict(type='DigitsDataset', split='test', num_samples=5))
    assert len(ds) == 5
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(dict(type='DigitsDataset', split='train', img_size=16))
    assert len(ds) == 1437 and ds[0]['img'].shape == (16, 16, 3)


def test_regularized_errors():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(KeyError, match='NoSuchBackbone is not in'):
            MODELS.build(dict(type='Regularized', host='NoSuchBackbone'))
        with pytest.raises(ValueError, match='needs `host`'):
            MODELS.build(dict(type='Regularized', host=''))
    with pytest.raises(KeyError, match='unknown regularizer'):
        mmvitreg.regularizers.apply_regularizers(torch.nn.Linear(2, 2), nosuchreg=dict())


def test_digits_dataset_errors():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        DATASETS.build(dict(type='DigitsDataset', split='val'))
