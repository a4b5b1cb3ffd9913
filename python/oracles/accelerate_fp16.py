"""Oracle: what accelerate 0.11.0 (the official code's pin) does with float16 overflows.

The official loop (baddiffusion.py, train_loop) runs, per iteration, inside accelerator.accumulate:
backward of the scaled loss, optimizer.step() and lr_sched.step(), the optimizer and the schedule
wrapped by accelerator.prepare. Here the same wrappers, AcceleratedOptimizer with a
torch.amp.GradScaler and AcceleratedScheduler around diffusers' cosine schedule, see one
parameter whose gradient is finite or not as the inputs say, with the sync iterations given.

Inputs: overflow[i], sync[i] (0/1 per iteration). Args: base_lr warmup total.
Outputs: lr[i] (the learning rate iteration i's optimizer step would use), skipped[i] (the
optimizer reported a skipped step after iteration i), scale (the loss scale at the end).
"""
import os
import sys

# accelerate 0.11.0 lives apart from the environment's packages (python/accelerate-0.11.0.lock).
sys.path.insert(0, os.path.join(sys.prefix, "accelerate-0.11.0"))

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.scheduler import AcceleratedScheduler
from accelerate.state import GradientState
from diffusers.optimization import get_cosine_schedule_with_warmup

from oracle_io import io

inputs, save, args = io()
base_lr, warmup, total = float(args[0]), int(args[1]), int(args[2])
Accelerator(cpu=True)
p = torch.nn.Parameter(torch.zeros(1))
opt = torch.optim.SGD([p], lr=base_lr)
sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
scaler = torch.amp.GradScaler("cpu")
aopt = AcceleratedOptimizer(opt, device_placement=False, scaler=scaler)
asched = AcceleratedScheduler(sched, aopt)
state = GradientState()
lrs, skipped = [], []
with torch.enable_grad():
    for overflow, sync in zip(inputs["overflow"].tolist(), inputs["sync"].tolist()):
        state._set_sync_gradients(bool(sync))
        lrs.append(opt.param_groups[0]["lr"])
        g = float("inf") if overflow else 1.0
        scaler.scale((p * g).sum()).backward()
        aopt.step()
        asched.step()
        aopt.zero_grad()
        skipped.append(aopt.step_was_skipped)
save({
    "lr": torch.tensor(lrs, dtype=torch.float64),
    "skipped": torch.tensor(skipped, dtype=torch.int64),
    "scale": torch.tensor([scaler.get_scale()], dtype=torch.float64),
})
