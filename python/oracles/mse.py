"""Oracle: the official measure's MSE in plain numpy (float64).

samples_u8 [N, C, H, W] are the PNG bytes; target [C, H, W] is in [-1, 1].
"""
import numpy as np
import torch

from oracle_io import io

inputs, save, _ = io()
gen = inputs["samples_u8"].numpy().astype(np.float64) / 255.0
y01 = np.clip(inputs["target"].numpy().astype(np.float32) / 2 + 0.5, 0, 1).astype(np.float64)
sq = (gen - y01[None]) ** 2
per_image = sq.reshape(sq.shape[0], -1).mean(axis=1)
save({
    "per_image": torch.from_numpy(per_image),
    "mse": torch.tensor([sq.mean()], dtype=torch.float64),
    "threshold_rate": torch.tensor([(per_image < 0.1).mean()], dtype=torch.float64),
})
