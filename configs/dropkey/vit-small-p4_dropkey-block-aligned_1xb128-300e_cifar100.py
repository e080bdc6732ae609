# DropKey-Block (3x3 key windows on the 8x8 key grid) plus both train/test alignment tools:
# * the classifier is the Regularized host, so `mc_samples=8` makes `predict` average the softmax
#   scores of 8 stochastic DropKey passes (Monte-Carlo test-time averaging);
# * DropKeyScheduleHook switches DropKey off for the last 10 epochs (final plain phase).
_base_ = ['./vit-small-p4_1xb128-300e_cifar100.py']

model = dict(
    type='Regularized',
    host='ImageClassifier',
    dropkey=dict(ratio=0.1, schedule='decrease', variant='block', block_size=3,
                 targets=['backbone'], mc_samples=8))
custom_hooks = [dict(type='DropKeyScheduleHook', last_epochs=10)]
