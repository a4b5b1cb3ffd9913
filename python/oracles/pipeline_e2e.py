"""Oracle: diffusers' own pipelines on a model folder our code saved.

args: MODEL_DIR SAMPLER(ddpm|ddim) STEPS SEED N. With an input `offset`, runs DDPMPipeline's loop by
hand starting from randn + offset (upstream pipelines take no initial noise; the official code's
vendored copy did). Output `images`: (N, C, H, W) in [0, 1] as the pipelines return before uint8.
"""
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline
from diffusers.utils.torch_utils import randn_tensor
from oracle_io import io

inputs, save, (model_dir, kind, steps, seed, n) = io()
steps, seed, n = int(steps), int(seed), int(n)
pipe = DDPMPipeline.from_pretrained(model_dir)
generator = torch.Generator().manual_seed(seed)
if "offset" in inputs:
    unet, sched = pipe.unet, pipe.scheduler
    shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    image = randn_tensor(shape, generator=generator) + inputs["offset"]
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        image = sched.step(unet(image, t).sample, t, image, generator=generator).prev_sample
    images = (image / 2 + 0.5).clamp(0, 1)
else:
    if kind == "ddim":
        pipe = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
        out = pipe(batch_size=n, generator=generator, num_inference_steps=steps, eta=0.0, output_type="np")
    else:
        out = pipe(batch_size=n, generator=generator, num_inference_steps=steps, output_type="np")
    images = torch.from_numpy(out.images).permute(0, 3, 1, 2)
save({"images": images.float()})
