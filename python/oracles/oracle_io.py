"""Shared plumbing of the oracle scripts: argv is IN.safetensors OUT.safetensors [args...]."""
import sys

import torch
from safetensors.torch import load_file, save_file


def io():
    """Returns (inputs dict, save(outputs dict) function, extra args)."""
    inputs = load_file(sys.argv[1])
    out_path = sys.argv[2]

    def save(outputs):
        save_file({k: v.detach().contiguous().cpu() for k, v in outputs.items()}, out_path)

    torch.set_grad_enabled(False)
    return inputs, save, sys.argv[3:]
