"""Decoder cross-attention of QPIC's queries: the maps are nn.MultiheadAttention's own weights,
placed on the right grid, and the box share / query grouping are what they claim."""
import os.path as osp

import numpy as np
import pytest
import torch

from mmvitreg.testing import make_hico_dataset
from mmvitreg.visualization.hoi_attention import (box_attention_share, decoder_query_attention,
                                                  memory_grid, triplets_by_query)
from tests._helpers import REPO

CONFIG = osp.join(REPO, 'configs', 'qpic', 'qpic_r18-w16_1xb4-300iter_hico-mini.py')


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp('hoi_attention')
    make_hico_dataset(str(root), num_train=0, num_test=1, seed=3)
    return osp.join(root, 'images', 'test2015', 'HICO_test2015_00000001.jpg')


def test_maps_are_the_attention_weights_of_the_last_cross_attention(image):
    from mmvitreg.apis import init_hoi_model
    torch.manual_seed(0)
    model = init_hoi_model(CONFIG, None)
    cross = model.decoder.layers[-1].cross_attn
    seen = {}

    def keep_inputs(module, args, kwargs):
        seen.update(kwargs)

    handle = cross.attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        attn = decoder_query_attention(model, image)
    finally:
        handle.remove()
    # torch's own head-averaged weights for the same inputs
    with torch.no_grad():
        _, weights = cross.attn(seen['query'], seen['key'], seen['value'],
                                key_padding_mask=seen.get('key_padding_mask'),
                                need_weights=True, average_attn_weights=True)
    weights = weights[0]  # (batch, queries, keys) whatever the layout of the inputs
    num_layers, num_queries, h, w = attn.maps.shape
    assert num_layers == len(model.decoder.layers)
    assert num_queries == model.num_queries
    torch.testing.assert_close(attn.maps[-1].reshape(num_queries, h * w), weights,
                               atol=1e-5, rtol=1e-4)
    # the grid is the padded input at the backbone's stride
    pad_h, pad_w = attn.data_sample.metainfo['batch_input_shape']
    assert (h, w) == (-(-pad_h // attn.stride), -(-pad_w // attn.stride)) and attn.stride > 1
    # every triplet names the query whose outputs it decodes
    pred = attn.data_sample.pred_hoi
    assert pred.query_index.max() < num_queries and len(pred.query_index) == len(pred.scores)


def test_memory_grid_finds_the_stride_or_refuses():
    assert memory_grid(16 * 21, (500, 666)) == (16, 21, 32)
    assert memory_grid(64, (64, 64)) == (8, 8, 8)
    with pytest.raises(ValueError, match='do not tile'):
        memory_grid(7, (64, 64))


def test_box_share_counts_the_cells_inside_the_union_of_the_boxes():
    grid = torch.zeros(4, 4)
    grid[0, 0] = 3.0  # cell centred at (4, 4) with 8-pixel cells
    grid[3, 3] = 1.0  # centred at (28, 28)
    xs = ys = np.arange(4) * 8 + 4.0
    assert box_attention_share(grid, xs, ys, [[0, 0, 8, 8]]) == pytest.approx(0.75)
    assert box_attention_share(grid, xs, ys, [[0, 0, 8, 8], [24, 24, 32, 32]]) == 1.0
    assert box_attention_share(grid, xs, ys, [[10, 10, 20, 20]]) == 0.0


def test_triplets_are_grouped_by_query_with_their_strong_verbs():
    from mmengine.structures import InstanceData
    boxes = torch.tensor([[0., 0., 1., 1.]] * 5)
    pred = InstanceData(scores=torch.tensor([0.9, 0.8, 0.6, 0.3, 0.2]),
                        query_index=torch.tensor([4, 1, 4, 4, 7]),
                        verb_labels=torch.tensor([0, 1, 2, 3, 4]),
                        obj_labels=torch.tensor([5, 6, 5, 5, 8]),
                        sub_bboxes=boxes, obj_bboxes=boxes)
    queries = triplets_by_query(pred, topk=2)
    assert [q['query'] for q in queries] == [4, 1]  # query 7 is the third best: left out
    assert queries[0]['verbs'] == [0, 2]  # 0.3 < 0.9 / 2: a weak verb of query 4 is not named
    assert queries[0]['score'] == pytest.approx(0.9) and queries[1]['obj_label'] == 6
    with pytest.raises(ValueError, match='topk'):
        triplets_by_query(pred, topk=0)
