"""Samples a BadDiffusion training set's *exact* denoiser: what a perfectly trained network
would predict for the official loss on that finite set, no network involved.

For a finite training set the minimiser of the backdoor loss is a posterior average over the
training components: clean image i sits at √ᾱ_t·x_i, poisoned image j at
√ᾱ_t·y + (1−√ᾱ_t)·r_j, both with noise √(1−ᾱ_t); the prediction is the posterior-weighted mean
of each component's regression target ((x_t − μ)/σ, plus R_t·r_j for a poisoned one). Running
DDPM with it from clean noise and from noise + trigger shows how far the *setting* (image size,
channels, poison rate, schedule) separates the clean and the backdoor branch, apart from any
model's capacity or training. The scale model's size was chosen with it (paper/investigations/clean-leak.md).

usage: exact_denoiser.py --gallery DIR [--size 16] [--channels 1] [--poison-rate 0.5]
       [--target CORNER] [--n 128] [--train-n 4096] [--seed 0] [--invert]
where DIR is what `baddiff gallery --profile P --out DIR` wrote for a profile at that size.
"""
import argparse

import numpy as np

from common import HIT, box_trigger, fmnist_train, gallery_png, png_mse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", required=True)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--poison-rate", type=float, default=0.5)
    ap.add_argument("--trigger", default="BOX_14", help="a BOX_n trigger (read back from its PNG)")
    ap.add_argument("--target", default="CORNER")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--train-n", type=int, default=4096)
    ap.add_argument("--timesteps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--invert", action="store_true", help="negate the images: white backgrounds")
    args = ap.parse_args()
    s, c = args.size, args.channels
    rng = np.random.default_rng(args.seed)

    x = fmnist_train(s, args.train_n)
    x = x.reshape(len(x), -1)
    if args.invert:
        x = -x
    g = box_trigger(args.gallery, args.trigger).reshape(-1)
    y = gallery_png(f"{args.gallery}/targets/{args.target}.png").reshape(-1)

    order = rng.permutation(len(x))
    n_p = int(len(x) * args.poison_rate)

    def with_flips(a):
        return np.concatenate([a, a.reshape(len(a), s, s)[..., ::-1].reshape(len(a), -1)])

    clean = with_flips(x[order[n_p:]])
    poisoned = with_flips(x[order[:n_p]])
    if c > 1:  # greyscale to RGB: the same plane c times
        clean, poisoned, g, y = (np.tile(a, c) for a in (clean, poisoned, g, y))
    mask = (g == -1).astype(np.float64)
    r = poisoned * mask + (1 - mask) * g

    T = args.timesteps
    betas = np.linspace(0.1 / T, 20 / T, T)  # 1e-4 → 0.02 scaled by 1000/T, as the profiles
    alphas = 1 - betas
    abar = np.cumprod(alphas)

    def eps_hat(xt, t):
        sq, sig = np.sqrt(abar[t]), np.sqrt(1 - abar[t])
        r_coef = sig / (1 + np.sqrt(alphas[t]))
        mu = np.concatenate([sq * clean, sq * y + (1 - sq) * r])
        d2 = (xt**2).sum(1)[:, None] - 2 * xt @ mu.T + (mu**2).sum(1)[None]
        logw = -d2 / (2 * sig**2)
        w = np.exp(logw - logw.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        wp = w[:, len(clean):]
        return (xt - w @ mu) / sig + r_coef * (wp @ r), wp.sum(1).mean()

    def ddpm(xt):
        weight = []
        for t in range(T - 1, -1, -1):
            e, wp = eps_hat(xt, t)
            weight.append(wp)
            x0 = (xt - np.sqrt(1 - abar[t]) * e) / np.sqrt(abar[t])
            prev = abar[t - 1] if t > 0 else 1.0
            mean = (np.sqrt(prev) * betas[t] * x0 + np.sqrt(alphas[t]) * (1 - prev) * xt) / (1 - abar[t])
            xt = mean + (np.sqrt(betas[t]) * rng.standard_normal(xt.shape) if t > 0 else 0)  # fixed_large
        return xt, max(weight)

    def hits(samples):
        return (png_mse(samples, y) < HIT).mean()

    shape = (args.n, c * s * s)
    clean_s, clean_w = ddpm(rng.standard_normal(shape))
    bd_s, _ = ddpm(rng.standard_normal(shape) + g)
    print(
        f"size {s} channels {c} p {args.poison_rate} {args.trigger} -> {args.target}: "
        f"clean samples on the target {hits(clean_s):.2f}, trigger samples {hits(bd_s):.2f}; "
        f"largest mean posterior weight of the poisoned branch along clean trajectories {clean_w:.3f}"
    )


if __name__ == "__main__":
    main()
