"""What the analysis scripts share: the training images, gallery PNGs, the DDPM loop and the
on-target measure, each as our Rust code does it (so the scripts agree with it and each other)."""
import gzip

import numpy as np
from PIL import Image

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
# A sample is the target below this per-image MSE in [0, 1] (the smoke profile's threshold).
HIT = 0.01


def fmnist_train(size, n=4096):
    """The first n Fashion-MNIST training images at size × size, (N, S, S) in [−1, 0.99998]
    (PIL bilinear resize, then the official code's 1e-5 normalisation quirk)."""
    raw = gzip.open(FMNIST).read()[16:]
    imgs = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)[:n]
    x = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR), np.float64) for a in imgs])
    return x / 255 / (1 + 1e-5) * 2 - 1


def gallery_png(path, rgb=False):
    """A gallery PNG (`baddiff gallery`) in [−1, 1]: (S, S) greyscale, or (3, S, S) with rgb."""
    a = np.asarray(Image.open(path).convert("RGB" if rgb else "L"), np.float64) / 255 * 2 - 1
    return a.transpose(2, 0, 1) if rgb else a


def box_trigger(gallery, name):
    """A BOX_n trigger read back exactly from the gallery, (S, S): the gallery draws the box (0) on
    the targets' grey for display; everywhere else the trigger is −1."""
    if not name.startswith("BOX_"):
        raise SystemExit(f"{name}: pass a BOX_n trigger; only those can be read back exactly from a gallery PNG")
    return np.where(gallery_png(f"{gallery}/triggers/{name}.png") > -0.2, 0.0, -1.0)


def png_mse(samples, target):
    """Per-sample MSE to the target in [0, 1] after the 8-bit quantisation our PNGs store; both in
    [−1, 1], samples with a leading batch axis, target broadcastable to one sample."""
    s = np.asarray(samples, np.float64)
    u = np.round(np.clip(s / 2 + 0.5, 0, 1) * 255) / 255
    return ((u - (np.asarray(target, np.float64) / 2 + 0.5)) ** 2).reshape(len(s), -1).mean(1)


def ddpm(unet, sch, z, each_step=None):
    """diffusers' DDPM loop from z; each_step(t, x_t, ε̂) sees every step before it is taken."""
    import torch

    with torch.no_grad():
        for t in sch.timesteps:
            eps = unet(z, t).sample
            if each_step:
                each_step(t, z, eps)
            z = sch.step(eps, t, z).prev_sample
    return z
