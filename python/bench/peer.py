"""The peer side of `cargo xtask bench`: what a user would otherwise run, on the same libtorch.

usage: peer.py SPEC.json [--reps N] [--threads T] [--device cpu|cuda[:N]] [--amp] [--count-flops]

SPEC.json is what `baddiff bench WORKLOAD --spec` prints (shapes, the diffusers UNet and
scheduler configs), so both sides run the same work. Workloads:
  train-step-*   one optimizer step of the official BadDiffusion loss (`p_losses_diffuser`, spec
                 section 2.4) on diffusers' UNet2DModel in PyTorch eager: loss, loss.item(),
                 backward, clip_grad_norm_(1.0), Adam step, LR schedule step, zero_grad;
  sample-scale   diffusers' DDPMPipeline, one call per batch (output_type="pt");
  fid-features   pytorch-fid's InceptionV3 pool3 loop of `get_activations` (random weights);
  matmul         torch.matmul of two n x n float32 matrices.
Prints one JSON object with the fields of `baddiffusion::bench::Measurement` (plus, on CUDA,
`peak_memory_bytes`: torch.cuda.max_memory_allocated). With
--count-flops, FLOPs per repetition are counted once, untimed, by
torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention; not elementwise ops),
and the share of time spent in those kernels is measured once with torch.profiler (`kernel_share`).
"""
import argparse
import contextlib
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

FLOPS_SOURCE = (
    "torch.utils.flop_counter.FlopCounterMode in the peer (matmul, convolution and attention "
    "FLOPs; elementwise ops not counted)"
)


def random_poison_batch(b, shape, poison_rate, device):
    """The first floor(B*p) samples poisoned (trigger-stamped input, backdoor target), the rest
    clean (R = 0, y = x); values random, as in our workload."""
    c, h, w = shape
    image = torch.rand(b, c, h, w) * 2 - 1
    trigger = torch.rand(1, c, h, w) * 0.5
    backdoor_target = torch.rand(1, c, h, w) * 2 - 1
    n_poisoned = math.floor(b * poison_rate)
    poisoned = (torch.arange(b) < n_poisoned).float().view(b, 1, 1, 1)
    pixel_values = (image + trigger).clamp(-1, 1) * poisoned
    target = image * (1 - poisoned) + backdoor_target * poisoned
    return {"pixel_values": pixel_values.to(device), "target": target.to(device)}


def q_sample_diffuser(sched, x_start, R, timesteps, noise):
    """The official backdoored forward process: diffusers' add_noise plus (1 - sqrt(abar_t)) * R;
    the regression target is R_coef_t * R + noise with R_coef over all timesteps."""
    alphas_cumprod = sched.alphas_cumprod.to(device=x_start.device, dtype=x_start.dtype)
    alphas = sched.alphas.to(device=x_start.device, dtype=x_start.dtype)
    timesteps = timesteps.to(x_start.device)
    shape = (len(x_start),) + (1,) * (x_start.dim() - 1)
    noisy = sched.add_noise(x_start, noise, timesteps)
    r_coef = (1 - alphas**0.5) * (1 - alphas_cumprod) ** 0.5 / (1 - alphas)
    r_coef_t = r_coef[timesteps].reshape(shape)
    sqrt_ac_t = (alphas_cumprod[timesteps] ** 0.5).reshape(shape)
    return noisy + (1 - sqrt_ac_t) * R, r_coef_t * R + noise


def p_losses_diffuser(sched, model, x_start, R, timesteps, noise):
    x_noisy, target = q_sample_diffuser(sched, x_start, R, timesteps, noise)
    predicted = model(x_noisy.contiguous(), timesteps.contiguous(), return_dict=False)[0]
    return torch.nn.functional.mse_loss(target, predicted)


def autocast(device, amp):
    if amp and device.type == "cuda":
        return torch.autocast("cuda")
    return contextlib.nullcontext()


class TrainStep:
    def __init__(self, spec, device, amp):
        from diffusers import DDPMScheduler, UNet2DModel, __version__ as dv
        from diffusers.optimization import get_cosine_schedule_with_warmup

        self.implementation = f"PyTorch {torch.__version__} eager, diffusers {dv} UNet2DModel, official loss"
        train = spec["train"]
        torch.manual_seed(spec["seed"])
        self.model = UNet2DModel.from_config(spec["unet"]).to(device).train()
        self.sched = DDPMScheduler.from_config(spec["scheduler"])
        self.opt = torch.optim.Adam(self.model.parameters(), lr=train["learning_rate"])
        self.lr_sched = get_cosine_schedule_with_warmup(
            self.opt, num_warmup_steps=train["warmup_steps"], num_training_steps=1_000_000
        )
        self.grad_clip = train["grad_clip"]
        self.batch = random_poison_batch(spec["batch"], spec["image_shape"], train["poison_rate"], device)
        self.device, self.amp = device, amp
        # accelerate's fp16 (the official code's) scales the loss; so does our trainer.
        self.scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def step(self):
        R, target = self.batch["pixel_values"], self.batch["target"]
        noise = torch.randn(R.shape).to(self.device)
        timesteps = torch.randint(0, self.sched.config.num_train_timesteps, (len(R),), device=self.device).long()
        with autocast(self.device, self.amp):
            loss = p_losses_diffuser(self.sched, self.model, target, R, timesteps, noise)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        self.lr_sched.step()
        self.opt.zero_grad()
        value = loss.detach().item()
        assert math.isfinite(value), f"loss is {value}"

    warmup = step
    rep = step

    def count_flops(self):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.step()
        return fc.get_total_flops()


class Sample:
    def __init__(self, spec, device, amp):
        from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel, __version__ as dv

        self.implementation = f"diffusers {dv} DDPMPipeline, PyTorch {torch.__version__}"
        torch.manual_seed(spec["seed"])
        unet = UNet2DModel.from_config(spec["unet"]).to(device).eval()
        self.pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(spec["scheduler"]))
        self.pipe.set_progress_bar_config(disable=True)
        self.spec, self.device, self.amp = spec, device, amp

    def sample(self, n, steps):
        batch, images = self.spec["batch"], []
        for k in range(math.ceil(n / batch)):
            g = torch.Generator().manual_seed(self.spec["seed"] + k)
            with autocast(self.device, self.amp):
                out = self.pipe(batch_size=min(batch, n - k * batch), generator=g,
                                num_inference_steps=steps, output_type="pt")
            images.append(out.images)
        assert len(torch.cat(images)) == n

    def warmup(self):
        self.sample(min(self.spec["batch"], self.spec["n"]), 2)

    def rep(self):
        self.sample(self.spec["n"], self.spec["steps"])

    def count_flops(self):
        from torch.utils.flop_counter import FlopCounterMode

        s = self.spec
        b = min(s["batch"], s["n"])
        x = torch.randn(b, *s["image_shape"]).to(self.device)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            self.pipe.unet(x, torch.tensor(1, device=self.device))
        return fc.get_total_flops() / b * s["n"] * s["steps"]


class Features:
    def __init__(self, spec, device, amp):
        from importlib.metadata import version

        from pytorch_fid import inception as fid

        self.implementation = f"pytorch-fid {version('pytorch-fid')} InceptionV3, PyTorch {torch.__version__}"
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracles"))
        from fid_inception_net import random_fid_inception

        net = random_fid_inception(spec["seed"])
        # InceptionV3 builds its network with fid_inception_v3(), which downloads the weights.
        fid.fid_inception_v3 = lambda: net
        dims = fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
        self.model = fid.InceptionV3([dims], resize_input=True, normalize_input=True).to(device).eval()
        torch.manual_seed(spec["seed"])
        self.images = torch.rand(spec["n"], *spec["image_shape"])
        self.spec, self.device = spec, device

    def features(self, images):
        """The inner loop of pytorch_fid.fid_score.get_activations, on in-memory images."""
        batch, rows = self.spec["batch"], []
        for s in range(0, len(images), batch):
            x = images[s : s + batch].to(self.device)
            with torch.no_grad():
                pred = self.model(x)[0]
            if pred.size(2) != 1 or pred.size(3) != 1:
                pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
            rows.append(pred.squeeze(3).squeeze(2).cpu().numpy())
        return rows

    def warmup(self):
        self.features(self.images[: self.spec["batch"]])

    def rep(self):
        rows = self.features(self.images)
        assert sum(len(r) for r in rows) == len(self.images)

    def count_flops(self):
        from torch.utils.flop_counter import FlopCounterMode

        b = min(self.spec["batch"], self.spec["n"])
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            self.model(self.images[:b].to(self.device))
        return fc.get_total_flops() / b * self.spec["n"]


class Matmul:
    def __init__(self, spec, device, amp):
        self.implementation = f"torch.matmul, PyTorch {torch.__version__}"
        torch.manual_seed(spec["seed"])
        n = spec["matmul_n"]
        self.a, self.b = torch.randn(n, n).to(device), torch.randn(n, n).to(device)

    def rep(self):
        self.a @ self.b

    warmup = rep

    def count_flops(self):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.rep()
        return fc.get_total_flops()


RUNNERS = {
    "train-step-cifar10": TrainStep,
    "train-step-scale": TrainStep,
    "sample-scale": Sample,
    "fid-features": Features,
    "matmul": Matmul,
    "matmul-gpu": Matmul,
    "train-step-cifar10-gpu": TrainStep,
    "sample-cifar10": Sample,
}


# The compute kernels both sides must run at identical math (same libtorch, same shapes):
# convolutions forward and backward, matrix products and attention. Everything else (norms,
# activations, elementwise ops, copies, dispatch) is where an implementation can differ.
KERNELS = (
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
)
KERNEL_PREFIXES = ("aten::_scaled_dot_product_",)


def kernel_share(runner, device):
    """Fraction of the self CPU time of one reduced repetition (the warm-up) spent in KERNELS,
    from torch.profiler. Profiling inflates small ops most, so the share is if anything low and
    the bound 1/share if anything high. CPU only (None on CUDA, where launches are asynchronous)."""
    if device.type != "cpu":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.warmup()
    total = kernels = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        if e.key in KERNELS or e.key.startswith(KERNEL_PREFIXES):
            kernels += e.self_cpu_time_total
    return kernels / total if total > 0 else None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="a workload spec JSON file (baddiff bench WORKLOAD --spec)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--count-flops", action="store_true")
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    if spec["workload"] not in RUNNERS:
        sys.exit(f"unknown workload {spec['workload']!r}: use one of {', '.join(RUNNERS)}")
    if spec.get("dtype") != "float32":
        sys.exit(f"workload {spec['workload']} asks for dtype {spec.get('dtype')}: only float32 is implemented")
    if a.reps < 1:
        sys.exit("--reps must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    runner = RUNNERS[spec["workload"]](spec, device, a.amp)
    flops = runner.count_flops() if a.count_flops else None
    runner.warmup()
    share = kernel_share(runner, device) if a.count_flops else None
    sync(device)
    times = []
    for _ in range(a.reps):
        start = time.perf_counter()
        runner.rep()
        sync(device)
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "workload": spec["workload"],
        "side": "peer",
        "implementation": runner.implementation,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dtype": spec["dtype"],
        "batch": spec["batch"],
        "warmup": 1,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "flops": float(flops) if flops is not None else None,
        "flops_source": FLOPS_SOURCE if flops is not None else None,
        "kernel_share": share,
        "libtorch": torch.__version__,
        "amp": bool(a.amp and device.type == "cuda"),
        # The caching allocator's high-water mark of tensor memory over the whole process.
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "spec": spec,
    }))


if __name__ == "__main__":
    main()
