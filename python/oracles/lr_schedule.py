"""Oracle: the learning rate of each optimizer step under diffusers' get_cosine_schedule_with_warmup."""
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from oracle_io import io

_, save, args = io()
base_lr, warmup, total, n = float(args[0]), int(args[1]), int(args[2]), int(args[3])
opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
lrs = []
for _ in range(n):
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
save({"lr": torch.tensor(lrs, dtype=torch.float64)})
