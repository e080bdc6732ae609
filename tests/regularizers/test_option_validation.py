"""Bad regularizer options: one clear ValueError/TypeError at build, naming option and value."""
import math

import pytest

from mmvitreg.registry import MODELS
from .common import vit_classifier_cfg

BAD_OPTIONS = [
    # (regularizer key, options, error type, words the message must contain)
    ('dropkey', dict(ratio=0.1, min_ratio=0.3), ValueError, ['min_ratio', '0.3']),
    ('dropkey', dict(ratio=0.1, min_ratio=0.3, schedule='increase'), ValueError, ['min_ratio']),
    ('dropkey', dict(ratio=False), TypeError, ['ratio', 'False']),
    ('dropkey', dict(ratio='0.1'), TypeError, ['ratio', "'0.1'"]),
    ('drloc', dict(loss_weight=float('nan')), ValueError, ['loss_weight', 'nan']),
    ('drloc', dict(loss_weight=math.inf), ValueError, ['loss_weight', 'inf']),
    ('drloc', dict(num_pairs=10**6), ValueError, ['num_pairs', '1000000']),
    ('drloc', dict(num_pairs=True), ValueError, ['num_pairs', 'True']),
    ('attention_cosine', dict(component=1, weight=float('nan')), ValueError, ['weight', 'nan']),
    ('attention_cosine', dict(component=1, weight=-math.inf), ValueError, ['weight', 'inf']),
    ('reattention', dict(transform_scale='no'), TypeError, ['transform_scale', "'no'"]),
    ('reattention', dict(layers=[0.5]), TypeError, ['layers', '0.5']),
    ('reattention', dict(layers=1), TypeError, ['layers', '1']),
    ('reattention', dict(last_k=1.5), TypeError, ['last_k', '1.5']),
]


@pytest.mark.parametrize('key,options,error,words', BAD_OPTIONS,
                         ids=[f'{k}-{sorted(o.items())}' for k, o, _, _ in BAD_OPTIONS])
def test_bad_option_is_one_clear_error_at_build(key, options, error, words):
    with pytest.raises(error) as info:
        MODELS.build(vit_classifier_cfg(**{key: options}))
    message = str(info.value)
    assert '\n' not in message
    for word in words:
        assert word in message, (word, message)


def test_good_edge_options_still_build():
    model = MODELS.build(vit_classifier_cfg(
        dropkey=dict(ratio=0.2, min_ratio=0.2), reattention=dict(layers=[1], transform_scale=True),
        drloc=dict(num_pairs=4096, loss_weight=0.0), attention_cosine=dict(component=1, weight=0)))
    assert model is not None
    # a constant schedule ignores min_ratio, so a larger one is harmless there
    MODELS.build(vit_classifier_cfg(dropkey=dict(ratio=0.1, min_ratio=0.3, schedule='constant')))
