"""Where the scale model's CPU time goes, and whether channels-last memory helps it: the smoke
profile's UNet (`UNet2DConfig::scale(28, 1)`, 280,177 parameters) in diffusers' UNet2DModel on
one libtorch thread, as the matrix runs each cell.

It times a training step (batch 32, Adam) and a forward pass (batch 128, the sampling batch) in
the default (NCHW) and channels-last layouts, then prints torch.profiler's operators of three
forward passes by self time. Our port runs the same kernels (results/bench), so a layout or
operator that does not pay here does not pay there.

usage: scale_unet_cpu_profile.py [--threads 1]
"""
import argparse
import time

import torch
from diffusers import UNet2DModel


def scale_unet():
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32),
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        freq_shift=1, flip_sin_to_cos=False, downsample_padding=0, norm_eps=1e-6)


def timed(model, layout):
    fmt = torch.channels_last if layout == "channels-last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=fmt)
    t = torch.randint(0, 100, (32,))

    def step():
        loss = (model(x, t).sample - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(20):
        step()
    train = (time.perf_counter() - start) / 20
    xb = torch.randn(128, 1, 28, 28).contiguous(memory_format=fmt)
    with torch.no_grad():
        model(xb, 5)
        start = time.perf_counter()
        for _ in range(5):
            model(xb, 5)
    forward = (time.perf_counter() - start) / 5
    print(f"{layout:14s} train step (batch 32) {train * 1e3:7.1f} ms   forward (batch 128) {forward * 1e3:7.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = scale_unet()
    print(f"{sum(p.numel() for p in model.parameters())} parameters, {a.threads} thread(s)")
    # The default layout first and last: the first measurement also warms the allocator.
    for layout in ["nchw", "channels-last", "nchw"]:
        timed(model, layout)
    model = model.to(memory_format=torch.contiguous_format)
    x = torch.randn(128, 1, 28, 28)
    with torch.no_grad():
        model(x, 5)
        with torch.profiler.profile() as prof:
            for _ in range(3):
                model(x, 5)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
