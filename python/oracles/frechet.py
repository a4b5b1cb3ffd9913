"""Oracle: pytorch-fid's statistics (np.mean, np.cov(rowvar=False)) and calculate_frechet_distance.

inputs x [N, D], y [M, D] (float64). args: optional `--npz PATH` also writes x's statistics as
pytorch-fid's save_fid_stats does (numpy.savez_compressed with mu and sigma).
"""
import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from oracle_io import io

inputs, save, args = io()
x, y = inputs["x"].double().numpy(), inputs["y"].double().numpy()
mu_x, sigma_x = np.mean(x, axis=0), np.cov(x, rowvar=False)
mu_y, sigma_y = np.mean(y, axis=0), np.cov(y, rowvar=False)
if args[:1] == ["--npz"]:
    np.savez_compressed(args[1], mu=mu_x, sigma=sigma_x)
fd = calculate_frechet_distance(mu_x, sigma_x, mu_y, sigma_y)
save({
    "fd": torch.tensor([float(fd)], dtype=torch.float64),
    "mu_x": torch.from_numpy(mu_x),
    "sigma_x": torch.from_numpy(sigma_x),
})
