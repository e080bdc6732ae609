# The main job on embedded data (`make demo`; no download, CPU): do DropKey and DRLoc carry from
# classification to detection to HOI detection? Three tasks built from scikit-learn's bundled
# handwritten digits, each against its own baseline, 3 seeds (paired by seed), two runs at a
# time on 2 CPU cores, ~25 min:
#   digits       ViT-Tiny classification (digits_regularizers.py), 10 epochs
#   digit_scenes ViT-FCOS detection (digit_scenes_detection.py), 2 epochs, COCO bbox mAP
#   digit_hoi    QPIC HOI detection (digit_scenes_hoi.py), 5 epochs, HICO-DET mAP
#
#   python tools/benchmark_regularizers.py configs/benchmark/suite_digits_cpu.py --jobs 2
#
# The schedules are shortened from the presets' own (15 / 3 / 25 epochs) to fit the budget, so
# the scores are lower than the presets' and the comparison is between equally short trainings.
# One table, one row per question (DropKey vs no attention regularizer; DRLoc vs no DRLoc),
# asked alike on every task: per task the paired difference of its primary metric with a 95% CI (significance
# Holm-adjusted over the table), and across the tasks whose runs carry information (a task where
# every run scores the same, or a run failed, is flagged and left out) the mean probability of
# improvement and the IQM of the differences / baseline std. Three seeds detect only large
# effects (the same difference on all 3 seeds gets the exact test's p = 0.25): read the CIs,
# not the signs.
_EPOCHS = dict(digits=10, digit_scenes=2, digit_hoi=5)


def _schedule(epochs):
    # the presets' schedules: warm-up by iteration (index 0), then cosine over the epochs
    return {'train_cfg.max_epochs': epochs, 'param_scheduler.1.end': epochs,
            'default_hooks.checkpoint.interval': epochs}


suite = dict(
    description='Do DropKey and DRLoc carry from classification to detection to HOI detection?',
    variants=['baseline', 'dropkey', 'drloc'],
    comparisons=[dict(variant='dropkey', question='DropKey vs no attention regularizer'),
                 dict(variant='drloc', question='DRLoc vs no DRLoc')],
    seeds=[0, 1, 2],
    tasks=dict(
        digits=dict(preset='digits_regularizers.py', cfg_options=_schedule(_EPOCHS['digits'])),
        digit_scenes=dict(preset='digit_scenes_detection.py',
                          cfg_options={**_schedule(_EPOCHS['digit_scenes']),
                                       'train_cfg.val_interval': _EPOCHS['digit_scenes'],
                                       'param_scheduler.1.T_max': _EPOCHS['digit_scenes']}),
        digit_hoi=dict(preset='digit_scenes_hoi.py',
                       cfg_options={**_schedule(_EPOCHS['digit_hoi']),
                                    'train_cfg.val_interval': _EPOCHS['digit_hoi'],
                                    'param_scheduler.1.T_max': _EPOCHS['digit_hoi']}),
    ))
