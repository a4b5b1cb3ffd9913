"""Oracle: torchmetrics' SSIM (data_range=1.0, defaults) per image and mean.

`full_*`: the pinned torchmetrics as is (whole SSIM map). `cropped_*`: the same SSIM map with the
padding width cropped off each side before averaging, as torchmetrics did before PR #2721.
"""
import torch
from torchmetrics.functional.image.ssim import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from oracle_io import io

inputs, save, _ = io()
preds, target = inputs["preds"], inputs["target"]
metric = StructuralSimilarityIndexMeasure(data_range=1.0)
metric.update(preds, target)
full_mean = metric.compute()
full_per_image, full_map = structural_similarity_index_measure(
    preds, target, data_range=1.0, reduction="none", return_full_image=True
)
pad = (int(3.5 * 1.5 + 0.5) * 2 + 1 - 1) // 2
cropped = full_map[..., pad:-pad, pad:-pad]
cropped_per_image = cropped.reshape(cropped.shape[0], -1).mean(-1)
save({
    "full_mean": full_mean.reshape(1),
    "full_per_image": full_per_image,
    "cropped_per_image": cropped_per_image,
    "cropped_mean": cropped_per_image.mean().reshape(1),
})
