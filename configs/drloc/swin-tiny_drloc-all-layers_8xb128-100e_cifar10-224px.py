# Swin-T + DRLoc "all layers" on CIFAR-10 (settings as for CIFAR-100).
_base_ = './swin-tiny_drloc-all-layers_8xb128-100e_cifar100-224px.py'

data_preprocessor = dict(num_classes=10)
model = dict(head=dict(num_classes=10))
train_dataloader = dict(dataset=dict(type='CIFAR10', data_root='data/cifar10'))
val_dataloader = dict(dataset=dict(type='CIFAR10', data_root='data/cifar10'))
test_dataloader = val_dataloader
