# CPU preset for HOI detection (no download): the tiny QPIC of configs/qpic/qpic_tiny_hico-mini.py
# (narrow ResNet-18, 1 encoder + 2 decoder layers of width 64, 300 iterations) on a generated
# HICO-DET-format data set written on first use.
#   python tools/benchmark_regularizers.py configs/benchmark/hico_mini_dropkey.py --jobs 2
# `dropkey` applies what configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py changes relative to its
# base (DropKey 0.1 decreasing with depth, restarted in each attention group). The generated
# classes are few: read the numbers as a check that the HOI pipeline runs, not as a comparison.
_base_ = ['../qpic/qpic_tiny_hico-mini.py']

benchmark = dict(
    seeds=[0, 1],
    metrics=['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare'],
    baseline='baseline',
    prepare=[dict(fn='mmvitreg.testing.hico.make_hico_dataset',
                  kwargs=dict(root='data/hico_mini', num_train=64, num_test=16, seed=0),
                  skip_if_exists='data/hico_mini/annotations/test_hico.json')],
    variants=dict(
        baseline=dict(description='tiny QPIC as configured (no attention-weight dropout)'),
        dropkey=dict(description='+ DropKey as in configs/qpic/qpic_r50_dropkey_8xb2-150e_hico.py',
                     recipe='../qpic/qpic_r50_dropkey_8xb2-150e_hico.py'),
        dropout=dict(description='attention-weight dropout 0.1',
                     cfg_options={'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.1,
                                  'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.1,
                                  'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.1}),
    ))
