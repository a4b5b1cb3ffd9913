"""Converts a PyTorch state-dict pickle (diffusers' diffusion_pytorch_model.bin) to safetensors.

Usage: python convert_bin.py SRC.bin DST.safetensors

torch.load runs with weights_only=True, so only tensors and plain containers are unpickled;
the Rust side never reads pickles. The output is written to a temporary file and renamed.
Prints the torch version used, for the conversion record.
"""
import os
import sys

import torch
from safetensors.torch import save_file


def main():
    src, dst = sys.argv[1], sys.argv[2]
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        sys.exit(f"{src}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        sys.exit(f"{src}: entries that are not tensors: {bad[:10]}")
    # clone: safetensors refuses tensors that share storage.
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    tmp = f"{dst}.tmp{os.getpid()}"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, dst)
    print(torch.__version__)


if __name__ == "__main__":
    main()
