"""Oracle for the sampling loop: diffusers' DDPM / DDIM pipelines and DPM-Solver multistep in the
same loop, over a deterministic stand-in denoiser that the Rust test implements identically.

args: one JSON list of cases {"name", "class": "ddpm"|"ddim"|"dpm", "config": {...}, "steps",
"seed", "batch", "shape": [C, H, W], "eta", "xt", "offset", "pipeline"}.
inputs: NAME.offset for cases with "offset": true.
Outputs: NAME = the final sample before (x/2+0.5).clamp(0,1); NAME.pipeline = the real
DDPMPipeline / DDIMPipeline output (output_type="np") for cases with "pipeline": true;
NAME.trace = the sample entering every step, stacked, for cases with "trace": true (debugging).
"""
import json
import warnings

import torch
from oracle_io import io

warnings.filterwarnings("ignore")
from diffusers import (  # noqa: E402
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402
from diffusers.models.modeling_utils import ModelMixin  # noqa: E402
from diffusers.utils import BaseOutput  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def stand_in(x, t):
    """eps(x, t) = w*x + (1-w)*(0.3*tanh(2x) + 0.05*cos(3x)), w = t/1000: near-identity at high
    noise (so x0-hat stays bounded), non-linear in x, varying with t."""
    w = float(t) / 1000.0
    return w * x + (1.0 - w) * (0.3 * torch.tanh(2.0 * x) + 0.05 * torch.cos(3.0 * x))


class StandInOutput(BaseOutput):
    sample: torch.Tensor


class StandInUNet(ModelMixin, ConfigMixin):
    """The stand-in behind the UNet2DModel interface the pipelines call."""

    @register_to_config
    def __init__(self, sample_size=8, in_channels=3):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t):
        return StandInOutput(sample=stand_in(x, t))


def mirrored_loop(case, inputs):
    """DDPMPipeline.__call__ / DDIMPipeline.__call__ step by step (plus the xt clamp and offset)."""
    sched = CLASSES[case["class"]](**case["config"])
    generator = torch.Generator().manual_seed(case["seed"])
    shape = (case["batch"], *case["shape"])
    image = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
    if case.get("offset"):
        image = image + inputs[case["name"] + ".offset"]
    sched.set_timesteps(case["steps"])
    trace = []
    for t in sched.timesteps:
        model_output = stand_in(image, t)
        trace.append(image)
        if case["class"] == "ddim":
            image = sched.step(
                model_output, t, image, eta=case["eta"], use_clipped_model_output=None, generator=generator
            ).prev_sample
        else:
            image = sched.step(model_output, t, image, generator=generator).prev_sample
        if case.get("xt"):
            image = image.clamp(-1.0, 1.0)
    return image, trace


def real_pipeline(case):
    c, h, w = case["shape"]
    assert h == w, "the pipelines take a square sample_size"
    unet = StandInUNet(sample_size=h, in_channels=c)
    sched = CLASSES[case["class"]](**case["config"])
    kwargs = dict(batch_size=case["batch"], generator=torch.Generator().manual_seed(case["seed"]),
                  num_inference_steps=case["steps"], output_type="np")
    if case["class"] == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=sched)
        kwargs["eta"] = case["eta"]
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    return torch.from_numpy(pipe(**kwargs).images)


inputs, save, args = io()
out = {}
for case in json.loads(args[0]):
    out[case["name"]], trace = mirrored_loop(case, inputs)
    if case.get("trace"):
        out[case["name"] + ".trace"] = torch.stack(trace)
    if case.get("pipeline"):
        out[case["name"] + ".pipeline"] = real_pipeline(case)
save(out)
