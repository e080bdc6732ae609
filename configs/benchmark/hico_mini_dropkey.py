# CPU default for HOI detection (no download): DropKey vs Dropout vs none in a tiny QPIC
# (configs/qpic/qpic_tiny_hico-mini.py: narrow ResNet-18, 1 encoder + 2 decoder layers of width 64,
# 300 iterations) on a generated HICO-DET-format data set written on first use:
#   python tools/benchmark_regularizers.py configs/benchmark/hico_mini_dropkey.py
# Reports HICO-DET mAP (Default setting) Full / Rare / Non-rare; the generated classes are few,
# so read the numbers as a check that the whole HOI pipeline runs, not as a method comparison.
base = 'configs/qpic/qpic_tiny_hico-mini.py'
seeds = [0, 1]
metrics = ['hico/mAP', 'hico/mAP_rare', 'hico/mAP_non_rare']
baseline = 'none'
prepare = [dict(fn='mmvitreg.testing.hico.make_hico_dataset',
                kwargs=dict(root='data/hico_mini', num_train=64, num_test=16, seed=0),
                skip_if_exists='data/hico_mini/annotations/test_hico.json')]
_ATTN_DROPOUT = {
    'model.encoder.layer_cfg.self_attn_cfg.dropout': 0.1,
    'model.decoder.layer_cfg.self_attn_cfg.dropout': 0.1,
    'model.decoder.layer_cfg.cross_attn_cfg.dropout': 0.1,
}
variants = dict(
    none=dict(description='tiny QPIC without attention dropout'),
    dropout=dict(description='attention-weight dropout 0.1', cfg_options=_ATTN_DROPOUT),
    dropkey_decrease=dict(description='DropKey 0.1 -> 0 over the 3 attention layers',
                          cfg_options={'model.type': 'Regularized', 'model.host': 'QPIC',
                                       'model.dropkey': dict(ratio=0.1, schedule='decrease')}),
)
