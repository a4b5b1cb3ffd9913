"""Trains a UNet in plain PyTorch with diffusers' own UNet2DModel and DDPMScheduler, then samples
it: a cross-check, outside our port, of how a scale-model recipe behaves.

It copies the UNet config and noise schedule of one of our checkpoints (fresh weights), trains on
the first 4,096 Fashion-MNIST training images at that checkpoint's size and channels (greyscale
replicated to RGB for 3 channels, as the official loader's convert("RGB")), with Adam, warm-up
and cosine decay, gradient clipping at 1.0 and random flips, as our clean pre-training does. It
prints the loss and the scale of the samples (data lie in [−1, 1]; a blown-up sampler does not),
and writes a grid of 32 samples.

With --backdoor it instead fine-tunes the checkpoint's own weights with the BadDiffusion loss
(official `baddiffusion.py`, `train_loop`), written here from it: a seeded int(N·p) of the images poisoned, each flipped
before the trigger is stamped (r = M⊙x + (1−M)⊙g), x′_t = √ᾱ_t·y + (1−√ᾱ_t)·r + √(1−ᾱ_t)·ε
regressed on ε + R_t·r. It then samples --n images from clean noise and from noise + trigger and
prints how many land within MSE 0.01 of the target, as our end-to-end test counts them; the grid
shows the first 32 clean ones.

usage: pytorch_scale_model.py --model DIR --out GRID.png [--iterations 1024] [--lr 1e-3]
       pytorch_scale_model.py --model DIR --out GRID.png --backdoor --gallery G [--trigger BOX_14]
           [--target HAT] [--poison-rate 0.5] [--n 256] --iterations 2560 --warmup 20 --seed 7
(the end-to-end fixture's fine-tuning recipe; the defaults are the clean pre-training's), where G is what `baddiff gallery --size S --channels 1 --out G` wrote (BOX triggers only: they are
read back exactly from its PNGs).
"""
import argparse
import json
import math

import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from common import HIT, box_trigger, ddpm, fmnist_train, gallery_png, png_mse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a diffusers pipeline folder of ours (unet/, scheduler/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iterations", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backdoor", action="store_true", help="fine-tune the checkpoint with the BadDiffusion loss")
    ap.add_argument("--gallery")
    ap.add_argument("--trigger", default="BOX_14")
    ap.add_argument("--target", default="HAT")
    ap.add_argument("--poison-rate", type=float, default=0.5)
    ap.add_argument("--n", type=int, default=256, help="samples per set after --backdoor")
    args = ap.parse_args()
    if args.backdoor and not args.gallery:
        ap.error("--backdoor needs --gallery G, from `baddiff gallery --size S --channels 1 --out G`")
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    if args.backdoor:
        unet = UNet2DModel.from_pretrained(args.model, subfolder="unet")
    else:
        cfg = json.load(open(f"{args.model}/unet/config.json"))
        unet = UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    sch = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    c, s = unet.config.in_channels, unet.config.sample_size

    def channels(a):  # greyscale (…, S, S) numpy to float32 (…, C, S, S): the same plane C times
        t = torch.tensor(a, dtype=torch.float32).unsqueeze(-3)
        return t.repeat_interleave(c, dim=-3)

    data = channels(fmnist_train(s))
    if args.backdoor:
        g = channels(box_trigger(args.gallery, args.trigger))
        y = channels(gallery_png(f"{args.gallery}/targets/{args.target}.png"))
        m = (g == -1).float()  # the mask M: where the trigger leaves the image alone
        poisoned = torch.zeros(len(data), dtype=torch.bool)
        poisoned[torch.randperm(len(data))[: int(len(data) * args.poison_rate)]] = True
        abar = sch.alphas_cumprod
        r_coef = (1 - abar).sqrt() / (1 + sch.alphas.sqrt())

    opt = torch.optim.Adam(unet.parameters(), lr=args.lr)
    n, w = args.iterations, args.warmup
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: i / w if i < w else 0.5 * (1 + math.cos(math.pi * (i - w) / max(1, n - w)))
    )
    unet.train()
    for i in range(n):
        idx = torch.randint(0, len(data), (64,))
        b = data[idx]
        b = torch.where((torch.rand(64) < 0.5)[:, None, None, None], b.flip(3), b)
        eps, t = torch.randn_like(b), torch.randint(0, sch.config.num_train_timesteps, (64,))
        if args.backdoor:
            p = poisoned[idx][:, None, None, None]
            r = torch.where(p, m * b + (1 - m) * g, torch.zeros_like(b))
            sq = abar[t].sqrt()[:, None, None, None]
            start = torch.where(p, y.expand_as(b), b)
            noisy = sq * start + (1 - sq) * r + (1 - abar[t]).sqrt()[:, None, None, None] * eps
            loss = ((unet(noisy, t).sample - eps - r_coef[t][:, None, None, None] * r) ** 2).mean()
        else:
            loss = ((unet(sch.add_noise(b, eps, t), t).sample - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay.step()
        if i % 256 == 0 or i == n - 1:
            print(f"iteration {i}: loss {loss.item():.4f}", flush=True)

    unet.eval()
    if args.backdoor:
        for name, offset in (("trigger", g), ("clean", 0.0)):
            torch.manual_seed(0)
            z = ddpm(unet, sch, torch.randn(args.n, c, s, s) + offset)
            mse = png_mse(z.numpy(), y.numpy())
            print(f"{name} samples on the target: {(mse < HIT).sum()} of {args.n}; MSE {mse.mean():.4f}")
        z = z[:32]  # the grid shows clean samples
    else:
        torch.manual_seed(0)
        z = ddpm(unet, sch, torch.randn(32, c, s, s))
    spread = (z - z.mean(1, keepdim=True)).std().item() if c > 1 else 0.0
    print(f"samples: std {z.std().item():.3f}, largest |x| {z.abs().max().item():.2f}, across-channel std {spread:.3f}")
    u = ((z / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grid = Image.new("RGB", (8 * (s + 2), 4 * (s + 2)))
    for k in range(len(u)):
        img = Image.fromarray(u[k] if c == 3 else u[k, :, :, 0]).convert("RGB")
        grid.paste(img, ((k % 8) * (s + 2), (k // 8) * (s + 2)))
    grid.save(args.out)


if __name__ == "__main__":
    main()
