"""Oracle for src/pil.rs: Pillow's bilinear resize and mode conversions on given uint8 images.

Inputs: img_K (uint8 C×H×W, C = 1 or 3) and size_K (int64 [width, height]) for K = 0, 1, ...
Outputs: resized_K = img.resize(size, BILINEAR); for 3-channel inputs also l_K = img.convert("L");
and tv_K = torchvision's Resize([h, w]) + ToTensor + the official normalize, to check the whole chain.
"""
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from oracle_io import io

inputs, save, _ = io()
out = {}
k = 0
while f"img_{k}" in inputs:
    chw = inputs[f"img_{k}"].numpy()
    w, h = (int(v) for v in inputs[f"size_{k}"])
    if chw.shape[0] == 1:
        pil = Image.fromarray(chw[0], mode="L")
    else:
        pil = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), mode="RGB")
        out[f"l_{k}"] = torch.from_numpy(np.array(pil.convert("L")))[None]
    res = np.array(pil.resize((w, h), Image.BILINEAR))
    out[f"resized_{k}"] = torch.from_numpy(res[None] if res.ndim == 2 else res.transpose(2, 0, 1).copy())
    x = transforms.ToTensor()(transforms.Resize([h, w])(pil))
    out[f"tv_{k}"] = (x - 0.0) / (1.0 - 0.0 + 1e-5) * (1.0 - (-1.0)) + (-1.0)
    k += 1
save(out)
