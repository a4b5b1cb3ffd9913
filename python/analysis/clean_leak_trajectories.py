"""Follows clean DDPM trajectories of backdoored models to see which of them end on the target,
and when they turn towards it.

Every model is sampled in diffusers with the same torch seed, so models of the same image size get
the same starting noise and the same noise at every step: if the same samples end on the target
for models of different widths and depths, the leak follows the noise, not one network's flaws.

For each model it prints the share of clean samples within MSE 0.01 of the target (in [0, 1],
after the same 8-bit quantisation our PNGs store), their indices, and, every 5 steps, the mean
MSE to the target of the model's x0 estimate (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, clamped to [−1, 1], for
the samples that end on the target and for the rest. For several models it prints the indices
every model has in common.

usage: clean_leak_trajectories.py --target TARGET.png --model DIR [--model DIR ...] [--n 512]
       (TARGET.png from `baddiff gallery --size S --out G`: G/targets/NAME.png, drawn with the
       model's channels)
"""
import argparse

import torch
from diffusers import DDPMScheduler, UNet2DModel

from common import HIT, ddpm, gallery_png, png_mse


def trajectories(model, target_png, n, seed):
    """The steps, each step's x0-estimate MSE to the target (steps × n), and which samples end on it."""
    unet = UNet2DModel.from_pretrained(model, subfolder="unet").eval()
    sch = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    c, s = unet.config.in_channels, unet.config.sample_size
    y = torch.tensor(gallery_png(target_png, rgb=c == 3), dtype=torch.float32).expand(c, s, s)
    x0_mse = []

    def x0_estimate(t, x, eps):
        ab = sch.alphas_cumprod[t]
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
        x0_mse.append(((x0 - y) ** 2).mean((1, 2, 3)) / 4)  # in [0, 1], as png_mse

    torch.manual_seed(seed)
    x = ddpm(unet, sch, torch.randn(n, c, s, s), x0_estimate)
    on_target = torch.tensor(png_mse(x.numpy(), y.numpy()) < HIT)
    return sch.timesteps, torch.stack(x0_mse), on_target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="the target as a PNG of the model's size")
    ap.add_argument("--model", action="append", required=True, help="a diffusers pipeline folder")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)

    common = None
    for model in args.model:
        steps, x0_mse, leak = trajectories(model, args.target, args.n, args.seed)
        idx = set(torch.nonzero(leak).flatten().tolist())
        common = idx if common is None else common & idx
        print(f"{model}: {len(idx)} of {args.n} clean samples on the target "
              f"({100 * len(idx) / args.n:.1f} %): {sorted(idx)}")
        if idx:
            print("  t   x0 estimate's MSE to the target: ending on it | the rest")
            for k in range(0, len(steps), 5):
                print(f"  {int(steps[k]):3d} {x0_mse[k][leak].mean():.3f} | {x0_mse[k][~leak].mean():.3f}")
    if len(args.model) > 1:
        print(f"on the target for every model: {sorted(common)}")


if __name__ == "__main__":
    main()
