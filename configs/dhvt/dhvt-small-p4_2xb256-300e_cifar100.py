# DHVT-S (patch 4, 384-d, 8 heads) on CIFAR-100; recipe as DHVT-T (official run_code_cifar.sh).
_base_ = ['./dhvt-tiny-p4_2xb256-300e_cifar100.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))
