"""Oracle for the UNet port: diffusers' UNet2DModel, saved and loaded the ways diffusers does.

Inputs: sample (B,C,H,W) float32, timesteps (K,) int64 run one at a time as Python ints,
t_batch (B,) int64 run as a per-sample vector. Outputs: out_scalar_<k> and out_batch.

Modes (extra args):
  make CONFIG.json DIR bare|pipeline safetensors|bin [old-keys] [seed=N]
      Builds UNet2DModel from CONFIG with torch.manual_seed(N) (norm affine parameters are
      perturbed so they matter), saves it with save_pretrained (a DDPMPipeline for `pipeline`),
      optionally renames attention weights to the pre-0.14 names (query/key/value/proj_attn),
      then runs the forwards.
  load DIR
      Loads DIR with DDPMPipeline.from_pretrained and UNet2DModel.from_pretrained (failing on
      any missing, unexpected or mismatched key) and runs the forwards.
"""
import json
import os
import sys

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from oracle_io import io
from safetensors.torch import load_file, save_file

OLD_NAMES = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def run(model, inputs):
    sample = inputs["sample"]
    out = {}
    for k, t in enumerate(inputs["timesteps"].tolist()):
        out[f"out_scalar_{k}"] = model(sample, int(t)).sample
    out["out_batch"] = model(sample, inputs["t_batch"]).sample
    return out


def rename_to_old(weights_path):
    if weights_path.endswith(".safetensors"):
        state = load_file(weights_path)
    else:
        state = torch.load(weights_path, weights_only=True)
    renamed = {}
    for k, v in state.items():
        for new, old in OLD_NAMES.items():
            if "attentions." in k and new in k:
                k = k.replace(new, old)
        renamed[k] = v
    assert any(".query." in k for k in renamed), "config has no attention to rename"
    if weights_path.endswith(".safetensors"):
        save_file(renamed, weights_path, metadata={"format": "pt"})
    else:
        torch.save(renamed, weights_path)


def make(inputs, args):
    config_path, out_dir, layout, fmt = args[:4]
    flags = args[4:]
    seed = 0
    for f in flags:
        if f.startswith("seed="):
            seed = int(f[5:])
    with open(config_path) as f:
        config = json.load(f)
    torch.manual_seed(seed)
    model = UNet2DModel.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    safe = fmt == "safetensors"
    if layout == "pipeline":
        DDPMPipeline(unet=model, scheduler=DDPMScheduler()).save_pretrained(out_dir, safe_serialization=safe)
        unet_dir = os.path.join(out_dir, "unet")
    else:
        model.save_pretrained(out_dir, safe_serialization=safe)
        unet_dir = out_dir
    if "old-keys" in flags:
        name = "diffusion_pytorch_model." + ("safetensors" if safe else "bin")
        rename_to_old(os.path.join(unet_dir, name))
    return run(model, inputs)


def load(inputs, args):
    (model_dir,) = args
    pipe = DDPMPipeline.from_pretrained(model_dir)
    unet, info = UNet2DModel.from_pretrained(model_dir, subfolder="unet", output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"diffusers reported loading problems: {problems}")
    out = run(pipe.unet.eval(), inputs)
    direct = run(unet.eval(), inputs)
    for k in out:
        if not torch.equal(out[k], direct[k]):
            sys.exit(f"DDPMPipeline and UNet2DModel loads disagree on {k}")
    return out


def main():
    inputs, save, args = io()
    mode, rest = args[0], args[1:]
    save({"make": make, "load": load}[mode](inputs, rest))


if __name__ == "__main__":
    main()
