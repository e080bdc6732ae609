# Cross-task CPU suite (no download): DropKey against each task's own baseline on classification
# (digits), detection (generated COCO-mini, DETR-R18) and HOI detection (generated HICO-mini,
# tiny QPIC), with reduced seeds and schedules so it fits ~20 minutes on 2 idle cores:
#   python tools/benchmark_regularizers.py configs/benchmark/suite_cpu_mini.py --jobs 2
# One table: per task the paired difference of its primary metric with a 95% CI, and the mean
# probability of improvement across tasks with a stratified bootstrap CI. On these tiny tasks
# the CIs are wide: the suite shows the machinery, the GPU suites answer the question.
suite = dict(
    variants=['baseline', 'dropkey'],
    seeds=[0, 1, 2],
    tasks=dict(
        digits=dict(preset='digits_regularizers.py',
                    cfg_options={'train_cfg.max_epochs': 10,
                                 'param_scheduler.1.end': 10,
                                 'default_hooks.checkpoint.interval': 10}),
        coco_mini=dict(preset='coco_mini_detr_dropkey.py',
                       cfg_options={'train_cfg.max_epochs': 8, 'train_cfg.val_interval': 8,
                                    'param_scheduler.0.end': 8,
                                    'param_scheduler.0.milestones': [6],
                                    'default_hooks.checkpoint.interval': 8}),
        hico_mini=dict(preset='hico_mini_dropkey.py',
                       cfg_options={'train_cfg.max_iters': 150, 'train_cfg.val_interval': 150,
                                    'param_scheduler.0.end': 150,
                                    'param_scheduler.0.milestones': [120],
                                    'default_hooks.checkpoint.interval': 150}),
    ))
