"""Oracle: the later defenses' statistics.

x [B, d] float64: scipy's Kolmogorov-Smirnov statistic of each row against N(0, 1).
images [N, C, H, W] in [0, 1]: torchmetrics' TotalVariation(reduction="mean").
"""
import torch
from scipy import stats
from torchmetrics.image import TotalVariation

from oracle_io import io

inputs, save, _ = io()
x = inputs["x"].numpy()
ks = [stats.kstest(row, "norm").statistic for row in x]
tv = TotalVariation(reduction="mean")(inputs["images"])
save({
    "ks": torch.tensor(ks, dtype=torch.float64),
    "tv": tv.reshape(1).to(torch.float64),
})
