"""Oracle for the scheduler tables: diffusers' betas, alphas_cumprod, inference timesteps (and
DPM-Solver's sigmas) for each case.

args: one JSON list of cases {"name", "class": "ddpm"|"ddim"|"dpm", "config": {...}, "steps": n}.
Outputs: NAME.betas, NAME.alphas_cumprod, NAME.timesteps (int64), and NAME.sigmas for "dpm".
"""
import json
import warnings

import torch
from oracle_io import io

warnings.filterwarnings("ignore")
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # noqa: E402

CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}

_, save, args = io()
out = {}
for case in json.loads(args[0]):
    sched = CLASSES[case["class"]](**case["config"])
    sched.set_timesteps(case["steps"])
    name = case["name"]
    out[f"{name}.betas"] = sched.betas
    out[f"{name}.alphas_cumprod"] = sched.alphas_cumprod
    out[f"{name}.timesteps"] = sched.timesteps.to(torch.int64)
    if case["class"] == "dpm":
        out[f"{name}.sigmas"] = sched.sigmas
save(out)
