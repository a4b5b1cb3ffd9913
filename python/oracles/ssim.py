"""Oracle: torchmetrics' SSIM (data_range=1.0, defaults) per image and mean, for pairs preds_i/target_i.

`full_*`: the pinned torchmetrics as is (whole SSIM map). `cropped_*`: the same SSIM map with the
padding width cropped off each side before averaging, as torchmetrics did before PR #2721.
"""
from torchmetrics.functional.image.ssim import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from oracle_io import io

inputs, save, _ = io()
pad = (int(3.5 * 1.5 + 0.5) * 2 + 1 - 1) // 2
out = {}
i = 0
while f"preds_{i}" in inputs:
    preds, target = inputs[f"preds_{i}"], inputs[f"target_{i}"]
    metric = StructuralSimilarityIndexMeasure(data_range=1.0)
    metric.update(preds, target)
    full_per_image, full_map = structural_similarity_index_measure(
        preds, target, data_range=1.0, reduction="none", return_full_image=True
    )
    cropped = full_map[..., pad:-pad, pad:-pad]
    cropped_per_image = cropped.reshape(cropped.shape[0], -1).mean(-1)
    out[f"full_mean_{i}"] = metric.compute().reshape(1)
    out[f"full_per_image_{i}"] = full_per_image
    out[f"cropped_per_image_{i}"] = cropped_per_image
    out[f"cropped_mean_{i}"] = cropped_per_image.mean().reshape(1)
    i += 1
save(out)
