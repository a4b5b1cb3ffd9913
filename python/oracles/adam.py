"""Oracle: torch.optim.Adam + clip_grad_norm_(1.0), three steps with given gradients and learning rates."""
import torch
from oracle_io import io

inputs, save, args = io()
torch.set_grad_enabled(True)
w = inputs["w0"].clone().requires_grad_(True)
b = inputs["b0"].clone().requires_grad_(True)
opt = torch.optim.Adam([w, b], lr=1.0)
for step, lr in enumerate(float(a) for a in args):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad()
    loss = (w * inputs[f"g{2 * step}"]).sum() + (b * inputs[f"g{2 * step + 1}"]).sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([w, b], 1.0)
    opt.step()
save({"w": w, "b": b})
