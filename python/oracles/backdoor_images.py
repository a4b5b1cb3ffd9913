"""Oracle for src/triggers.rs: image triggers and targets built the official way (dataset.py's
Backdoor.__get_img_trigger / __get_img_target / SHOE) with torchvision transforms on PIL images.

Args, one per tensor to build (output key out_K for the K-th arg):
  trigger:PATH:C:S:n:l:t   image resized to n (shorter side), padded with -1 so its top-left is at
                           (t, l) in an S×S canvas, then elements >= 0.999 set to -1
  target:PATH:C:S          image resized to [S, S], then bg2grey
  shoe:DIR:C:S             Fashion-MNIST train[0] read from DIR's raw idx files, as a target
  box:C:S:n                BOX_n: -1 canvas, [:, -(n+2):-2, -(n+2):-2] = 0 (dataset.py's box trigger)
  stop_sign:PATH:C:S:n     STOP_SIGN_n: the trigger above with its official place, l = t = S - n - 2
  glasses:PATH:C:S         GLASSES: resized to int(0.625 S), centred (l = t = int((S - s) / 2))
  corner:C:S               CORNER: -1 canvas, [:, 0:10, 0:10] = 0, then bg2grey
  noshift:K                NoShift (code: TRIGGER) of this call's K-th output: bg2grey(g)
  shift:K                  SHIFT of the K-th output: bg2grey(roll(g, (-3, -5))) over (rows, columns)
The named kinds spell out the official geometry (IBM/BadDiffusion dataset.py, Backdoor.get_trigger and
get_target), so tests need no precomputed tensors.
"""
import gzip
import os

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from oracle_io import io

VMIN, VMAX = -1.0, 1.0


def normalize(x):
    return (x - 0.0) / (1.0 - 0.0 + 1e-5) * (VMAX - VMIN) + VMIN


def transform(channel, size, after=()):
    ch = transforms.Grayscale(num_output_channels=1) if channel == 1 else transforms.Lambda(lambda x: x.convert("RGB"))
    return transforms.Compose([ch, transforms.Resize(size), transforms.ToTensor(), transforms.Lambda(normalize), *after])


def bg2grey(t):
    thres = (VMAX - VMIN) * 0.3 + VMIN
    t[t <= thres] = thres
    return t


def fashion_mnist_first(d):
    name = "train-images-idx3-ubyte"
    path = os.path.join(d, name + ".gz")
    raw = gzip.open(path).read() if os.path.exists(path) else open(os.path.join(d, name), "rb").read()
    arr = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return Image.fromarray(arr[0].copy(), mode="L")


def image_trigger(path, c, s, n, l, t):
    pad = transforms.Pad(padding=[l, t, s - n - l, s - n - t], fill=VMIN)
    g = transform(c, n, [pad])(Image.open(path))
    g[g >= 0.999] = VMIN
    return g


_, save, args = io()
out = {}
for k, spec in enumerate(args):
    kind, *rest = spec.split(":")
    if kind in ("box", "corner", "noshift", "shift"):
        nums = [int(v) for v in rest]
        if kind == "box":
            c, s, n = nums
            g = torch.full((c, s, s), VMIN)
            g[:, -(n + 2):-2, -(n + 2):-2] = (VMIN + VMAX) / 2
            out[f"out_{k}"] = g
        elif kind == "corner":
            c, s = nums
            t = torch.full((c, s, s), VMIN)
            t[:, 0:10, 0:10] = (VMIN + VMAX) / 2
            out[f"out_{k}"] = bg2grey(t)
        elif kind == "noshift":
            out[f"out_{k}"] = bg2grey(out[f"out_{nums[0]}"].clone())
        else:
            out[f"out_{k}"] = bg2grey(torch.roll(out[f"out_{nums[0]}"], shifts=(-3, -5), dims=(-2, -1)))
        continue
    path, *nums = rest
    nums = [int(v) for v in nums]
    if kind == "trigger":
        out[f"out_{k}"] = image_trigger(path, *nums)
    elif kind == "stop_sign":
        c, s, n = nums
        out[f"out_{k}"] = image_trigger(path, c, s, n, s - n - 2, s - n - 2)
    elif kind == "glasses":
        c, s = nums
        n = int(0.625 * s)
        out[f"out_{k}"] = image_trigger(path, c, s, n, int((s - n) / 2), int((s - n) / 2))
    elif kind == "target":
        c, s = nums
        out[f"out_{k}"] = bg2grey(transform(c, [s, s])(Image.open(path)))
    elif kind == "shoe":
        c, s = nums
        out[f"out_{k}"] = bg2grey(transform(c, [s, s])(fashion_mnist_first(path)))
    else:
        raise SystemExit(f"unknown spec {spec}")
save(out)
