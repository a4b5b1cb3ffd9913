"""Oracle: pytorch-fid's InceptionV3 (pool3, resize_input, normalize_input) on seeded random weights.

args: SEED WEIGHTS_OUT.safetensors. The real FID weights cannot be downloaded here, so the
architecture is built as pytorch-fid's fid_inception_v3() builds it (torchvision Inception3 with
1008 classes, no aux head, init_weights=False, FIDInception* blocks swapped in) and initialised
from SEED; its state_dict is written to WEIGHTS_OUT, and the pool3 features of `images` returned.
"""
import math

import torch
import torchvision
from pytorch_fid import inception as fid
from safetensors.torch import save_file

from oracle_io import io

inputs, save, args = io()
seed, weights_out = int(args[0]), args[1]


def build():
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    # Seeded init that keeps activations O(1) through ~90 layers and makes BatchNorm non-trivial.
    g = torch.Generator().manual_seed(seed)
    for name, t in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith("conv.weight"):
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in))
        elif name.endswith("bn.weight") or name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif name.endswith("bn.bias") or name.endswith("running_mean"):
            t.copy_(0.1 * torch.randn(t.shape, generator=g))
        else:  # fc
            t.copy_(0.01 * torch.randn(t.shape, generator=g))
    return net


net = build()
state = {k: v.contiguous() for k, v in net.state_dict().items()}
save_file(state, weights_out)
# InceptionV3 calls fid_inception_v3(), which downloads; hand it our network instead.
fid.fid_inception_v3 = lambda: net
model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
model.eval()
features = model(inputs["images"])[0].squeeze(-1).squeeze(-1)
save({"features": features})
