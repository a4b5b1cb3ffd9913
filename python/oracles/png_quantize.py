"""Oracle for PNG output: diffusers' quantisation of pipeline images, and PIL's reading of PNGs.

inputs: x, images (N, C, H, W) in [-1, 1] as the sampler returns them.
args: a folder of PNGs written by the Rust side.
Outputs: diffusers = numpy_to_pil((x/2+0.5).clamp(0,1) as NHWC), as uint8 (N, H, W, C);
pil_read = the folder's PNGs (sorted by name) read with PIL, uint8 (N, H, W, C).
"""
import os

import numpy as np
import torch
from oracle_io import io
from PIL import Image

from diffusers.utils.pil_utils import numpy_to_pil

inputs, save, args = io()
x = inputs["x"]
# The end of DDPMPipeline.__call__ with output_type="pil".
image = (x / 2 + 0.5).clamp(0, 1)
image = image.cpu().permute(0, 2, 3, 1).numpy()
pils = numpy_to_pil(image)


def as_hwc(img):
    a = np.array(img)
    return a[:, :, None] if a.ndim == 2 else a


folder = args[0]
names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
save({
    "diffusers": torch.from_numpy(np.stack([as_hwc(p) for p in pils])),
    "pil_read": torch.from_numpy(np.stack([as_hwc(Image.open(os.path.join(folder, n))) for n in names])),
})
