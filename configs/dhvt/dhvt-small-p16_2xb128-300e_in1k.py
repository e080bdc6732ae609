# DHVT-S (patch 16, 384-d, 6 heads) on ImageNet-1k; recipe as DHVT-T (official run_code_imn.sh).
_base_ = ['./dhvt-tiny-p16_2xb128-300e_in1k.py']
custom_imports = dict(imports=['mmvitreg'], allow_failed_imports=False)

model = dict(backbone=dict(arch='small', num_heads=6), head=dict(in_channels=384))
