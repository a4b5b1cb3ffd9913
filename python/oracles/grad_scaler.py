"""Oracle: torch.amp.GradScaler on the CPU. Step i backpropagates the scaled loss sum(p * grads[i])
(so the unscaled gradient is grads[i]), then unscale_, step (SGD, lr 1, skipped on inf/NaN) and
update. Returns the scale after each step and the final parameters."""
import torch
from oracle_io import io

inputs, save, args = io()
grads = inputs["grads"]
growth_interval = int(args[0])
p = torch.nn.Parameter(torch.zeros(grads.shape[1]))
opt = torch.optim.SGD([p], lr=1.0)
scaler = torch.amp.GradScaler("cpu", growth_interval=growth_interval)
scales = []
with torch.enable_grad():
    for g in grads:
        opt.zero_grad()
        scaler.scale((p * g).sum()).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
save({"scales": torch.tensor(scales, dtype=torch.float64), "param": p.detach().clone()})
