"""Converts a PyTorch weights pickle (.pth/.bin) to safetensors once, without executing code.

usage: python convert_pth.py IN.pth OUT.safetensors
`torch.load(weights_only=True)` refuses anything but tensors and plain containers, so a tampered
pickle cannot run code. Prints a JSON record with both files' sha256 (written next to OUT as
OUT.json too), so a result can name the original file it came from.
"""
import hashlib
import json
import sys

import torch
from safetensors.torch import save_file


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: convert_pth.py IN.pth OUT.safetensors")
    src, dst = sys.argv[1], sys.argv[2]
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        sys.exit(f"{src} does not hold a state_dict of tensors")
    save_file({k: v.contiguous() for k, v in state.items()}, dst)
    record = {"source": src, "source_sha256": sha256(src), "safetensors": dst, "safetensors_sha256": sha256(dst),
              "tensors": len(state)}
    with open(dst + ".json", "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
