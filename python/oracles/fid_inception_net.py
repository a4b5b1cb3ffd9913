"""pytorch-fid's fid_inception_v3() architecture with seeded random weights.

The real FID weights cannot be downloaded here, so both the parity oracle (fid_inception.py) and
the benchmark peer (python/bench/peer.py) build the network as pytorch-fid does (torchvision
Inception3 with 1008 classes, no aux head, init_weights=False, FIDInception* blocks swapped in)
and fill it from a seed, in sorted parameter order, at a trained network's scale.
"""
import math

import torch
import torchvision
from pytorch_fid import inception as fid


def random_fid_inception(seed):
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
    # Keeps activations O(1) through ~90 layers and makes BatchNorm non-trivial.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(net.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("conv.weight"):
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / t[0].numel()))
            elif name.endswith("bn.weight") or name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("bn.bias") or name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            else:  # fc
                t.copy_(0.01 * torch.randn(t.shape, generator=g))
    return net
