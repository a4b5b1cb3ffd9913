"""Writes format-true stand-ins for every external input of the GPU profiles.

Why: the GPU profiles (kick-the-tires, paper, released) start from files that must be
downloaded: CIFAR-10, Google's DDPM checkpoints, the authors' released backdoored models, pytorch-fid's
Inception weights and a CelebA-HQ image folder. To test the real fetch path (download, checksum,
extract) and the profiles' code paths at the real shapes on a CPU without network, a local HTTP
server serves these stand-ins in place of the originals. Each one has the layout of the real file
(archive members, record format, state-dict names and shapes, JSON fields), but its contents are
seeded random numbers: nothing measured on them means anything.

usage: python make_standins.py OUT_DIR [--seed 0]

Writes OUT_DIR/<artifact name>/<file path> (the `name` and `path` fields of artifacts/manifest.toml)
and OUT_DIR/standins.json with the seed, this script's sha256 and every file's sha256. The same
seed gives the same bytes: archives carry no timestamps or owners, and numbers come from numpy
Generators and torch.manual_seed. Everything is written under OUT_DIR.tmp, which is renamed to
OUT_DIR at the end, so OUT_DIR is either absent, the previous complete set or the new one.
"""
import argparse
import gzip
import hashlib
import io
import json
import pickle
import re
import shutil
import sys
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from PIL import Image
from safetensors.torch import save_file
from torch import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "oracles"))
from fid_inception_net import random_fid_inception  # noqa: E402

# --- CIFAR-10 -------------------------------------------------------------------------------

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The real batches hold 10,000 records each; any whole number of records is a valid file.
CIFAR_RECORDS_PER_BATCH = 64
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then 1024 R, 1024 G, 1024 B (row-major 32x32)
CIFAR_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_README = (
    "<html><body><p>Stand-in for the CIFAR-10 binary version: seeded random pixels and labels "
    "in the real record layout (1 label byte + 3072 pixel bytes). Not CIFAR-10.</p></body></html>\n"
)

# --- Google's DDPM checkpoints (the fields of their hub config.json) -------------------------

UNET_COMMON = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "time_embedding_type": "positional",
}
UNET_CIFAR10 = dict(
    UNET_COMMON,
    sample_size=32,
    block_out_channels=[128, 256, 256, 256],
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
)
UNET_CELEBAHQ = dict(
    UNET_COMMON,
    sample_size=256,
    block_out_channels=[128, 128, 256, 256, 512, 512],
    down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
)
SCHEDULER_CIFAR10 = {
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_large",
}
SCHEDULER_CELEBAHQ = dict(SCHEDULER_CIFAR10, variance_type="fixed_small")
HUB_UNET_VERSION = "0.0.4"
HUB_SCHEDULER_VERSION = "0.1.1"

# --- The authors' released models (diffusers 0.16 DDPMPipeline.save_pretrained) ------------

RELEASED_VERSION = "0.16.0.dev0"
# save_pretrained writes every __init__ argument, defaults included: these are the ones diffusers
# 0.16 had beyond the hub configs' fields [inferred from diffusers 0.16's signatures].
UNET_DEFAULTS_0_16 = {
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
}
# The official code's vendored diffusers (IBM/BadDiffusion diffusers/src/diffusers/schedulers/
# scheduling_ddpm.py:137-138) registers two more fields, which save_pretrained writes too.
SCHEDULER_DEFAULTS_0_16 = {
    "clip_defense": False,
    "clip_defense_range": 1.0,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "thresholding": False,
}
# (artifact name, torch seed offset, the original run's trigger/target names, the score.json keys
# that paper/released_scores.toml compares for that model).
BASE_SCORE_KEYS = ["FID", "FID_noclip", "MSE", "MSE_noclip", "SSIM", "SSIM_noclip"]
ODE_SCORE_KEYS = [
    "DDIM-50 FID", "DDIM-50 MSE", "DDIM-50 SSIM",
    "DPM-Solver-O2 (20 steps) FID", "DPM-Solver-O2 (20 steps) MSE",
]
RELEASED = [
    ("released-cifar10-p0.9-box14-corner", 1, "SM_BOX_MED", "BOX", BASE_SCORE_KEYS + ODE_SCORE_KEYS),
    ("released-cifar10-p0.9-stopsign14-corner", 2, "SM_STOP_SIGN", "BOX", BASE_SCORE_KEYS + ODE_SCORE_KEYS),
    ("released-cifar10-p0.9-stopsign14-shift", 3, "SM_STOP_SIGN", "SHIFT", BASE_SCORE_KEYS),
]

# --- pytorch-fid Inception -------------------------------------------------------------------

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"

# --- CelebA-HQ image folder ------------------------------------------------------------------

CELEBAHQ_IMAGES = 64
CELEBAHQ_SIZE = 256

# One numpy stream per artifact, so that changing one artifact leaves the others' bytes alone.
STREAM_CIFAR10, STREAM_SCORES, STREAM_CELEBAHQ = 1, 2, 3


# --- writers ---------------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def diffusers_json(config: dict) -> bytes:
    """A config file as diffusers' ConfigMixin.to_json_string writes it."""
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def deterministic_tar_gz(members) -> bytes:
    """A tar.gz of (name, bytes or None for a directory) with no timestamps, owners or file name."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# --- artifacts -------------------------------------------------------------------------------


def cifar10_binary(out: Path, seed: int):
    """cifar-10-binary.tar.gz: cifar-10-batches-bin/ with the real member names and record layout."""
    rng = np.random.default_rng([seed, STREAM_CIFAR10])
    members = [("cifar-10-batches-bin", None),
               ("cifar-10-batches-bin/batches.meta.txt", ("\n".join(CIFAR_CLASSES) + "\n\n").encode())]
    for name in CIFAR_BATCHES:
        records = np.empty((CIFAR_RECORDS_PER_BATCH, CIFAR_RECORD_BYTES), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, CIFAR_RECORDS_PER_BATCH, dtype=np.uint8)
        records[:, 1:] = rng.integers(0, 256, (CIFAR_RECORDS_PER_BATCH, CIFAR_RECORD_BYTES - 1), dtype=np.uint8)
        members.append((f"cifar-10-batches-bin/{name}", records.tobytes()))
    members.append(("cifar-10-batches-bin/readme.html", CIFAR_README.encode()))
    write_bytes(out / "cifar-10-binary.tar.gz", deterministic_tar_gz(members))


# diffusers' current attention parameter names and the ones the 2022 checkpoints were saved with
# (diffusers <= 0.16 AttentionBlock); both diffusers and our loader map the old names on load.
OLD_ATTENTION_NAMES = [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")]
ATTENTION_PARAM = re.compile(r"^(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)(\.(?:weight|bias))?$")


def old_attention_name(name: str) -> str | None:
    """The pre-0.17 name of a parameter or module path; None for modules the old block lacked."""
    m = ATTENTION_PARAM.match(name)
    if m:
        return m.group(1) + "." + dict(OLD_ATTENTION_NAMES)[m.group(2)] + (m.group(3) or "")
    if re.search(r"\.attentions\.\d+\.to_out(\.\d+)?$", name):
        return None  # the to_out ModuleList and its Dropout
    return name


def random_unet_state(fields: dict, torch_seed: int) -> OrderedDict:
    """diffusers' own random init of UNet2DModel(**fields), with the old attention names, as
    save_pretrained(safe_serialization=False) pickles it (state dict plus its _metadata)."""
    torch.manual_seed(torch_seed)
    model = UNet2DModel(**fields)
    state = model.state_dict()
    renamed = OrderedDict((old_attention_name(k), v) for k, v in state.items())
    renamed._metadata = OrderedDict(
        (old, meta) for k, meta in state._metadata.items() if (old := old_attention_name(k)) is not None
    )
    return renamed


def save_bin(state: OrderedDict, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def save_safetensors(state: OrderedDict, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(state), path, metadata={"format": "pt"})


def google_ddpm(out: Path, unet_fields: dict, scheduler: dict, torch_seed: int):
    """A bare UNet folder as google/ddpm-* on the hub: configs, .bin and a safetensors copy."""
    config = dict(unet_fields, _class_name="UNet2DModel", _diffusers_version=HUB_UNET_VERSION)
    write_bytes(out / "config.json", diffusers_json(config))
    sched = dict(scheduler, _class_name="DDPMScheduler", _diffusers_version=HUB_SCHEDULER_VERSION)
    write_bytes(out / "scheduler_config.json", diffusers_json(sched))
    state = random_unet_state(unet_fields, torch_seed)
    save_bin(state, out / "diffusion_pytorch_model.bin")
    save_safetensors(state, out / "diffusion_pytorch_model.safetensors")


def run_config(poison_rate: float, trigger: str, target: str) -> OrderedDict:
    """The official code's config.json: TrainingConfig.__dict__ in field order, json.dump(indent=2),
    with the values the original runs recorded (see the spec's section 3)."""
    return OrderedDict([
        ("project", "Poison_Rates"), ("batch", 128), ("epoch", 50), ("eval_max_batch", 256),
        ("learning_rate", 0.0002), ("clean_rate", 1.0), ("poison_rate", poison_rate),
        ("trigger", trigger), ("target", target), ("dataset_load_mode", "FIXED"), ("gpu", "0"),
        ("ckpt", "DDPM-CIFAR10-32"), ("overwrite", False), ("postfix", "new-set-1"), ("fclip", "w"),
        ("save_image_epochs", 20), ("save_model_epochs", 5), ("is_save_all_model_epochs", False),
        ("sample_ep", None), ("result", "."), ("eval_sample_n", 16), ("measure_sample_n", 2048),
        ("batch_32", 128), ("batch_256", 64), ("gradient_accumulation_steps", 1),
        ("learning_rate_32_scratch", 0.0002), ("learning_rate_256_scratch", 2e-05),
        ("learning_rate_256_fine", 6e-05), ("lr_warmup_steps", 500), ("mixed_precision", "fp16"),
        ("push_to_hub", False), ("hub_private_repo", False), ("overwrite_output_dir", True), ("seed", 0),
        ("dataset_path", "datasets"), ("ckpt_dir", "ckpt"), ("data_ckpt_dir", "data.ckpt"),
        ("ep_model_dir", "epochs"), ("ckpt_path", None), ("data_ckpt_path", None), ("mode", "train+measure"),
        ("dataset", "CIFAR10"), ("device_ids", [0]), ("clip", True),
    ])


def random_scores(rng: np.random.Generator, keys) -> dict:
    """Plausible-looking random values per key: FID 10-40, MSE 1e-6-1e-3 (log-uniform), SSIM 0.9-1."""
    scores = {}
    for key in keys:
        if "FID" in key:
            scores[key] = round(float(rng.uniform(10.0, 40.0)), 4)
        elif "MSE" in key:
            scores[key] = float(f"{10 ** rng.uniform(-6.0, -3.0):.5g}")
        else:  # SSIM
            scores[key] = round(float(rng.uniform(0.9, 1.0)), 5)
    return scores


def released_model(out: Path, torch_seed: int, trigger: str, target: str, score_keys, rng):
    """A DDPMPipeline folder as the authors' training runs saved it, plus config.json and score.json."""
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": RELEASED_VERSION,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    write_bytes(out / "model_index.json", diffusers_json(index))
    unet = dict(UNET_CIFAR10, **UNET_DEFAULTS_0_16, _class_name="UNet2DModel", _diffusers_version=RELEASED_VERSION)
    write_bytes(out / "unet" / "config.json", diffusers_json(unet))
    # .bin only: the released repositories predate safetensors.
    save_bin(random_unet_state(UNET_CIFAR10, torch_seed), out / "unet" / "diffusion_pytorch_model.bin")
    sched = dict(SCHEDULER_CIFAR10, **SCHEDULER_DEFAULTS_0_16,
                 _class_name="DDPMScheduler", _diffusers_version=RELEASED_VERSION)
    write_bytes(out / "scheduler" / "scheduler_config.json", diffusers_json(sched))
    # The official code writes both with json.dump(indent=2): no trailing newline; score.json sorted.
    write_bytes(out / "config.json", json.dumps(run_config(0.9, trigger, target), indent=2).encode())
    write_bytes(out / "score.json", json.dumps(random_scores(rng, score_keys), indent=2, sort_keys=True).encode())


def pytorch_fid_inception(out: Path, torch_seed: int):
    """pt_inception-*.pth: the state dict of the FID Inception, seeded random weights.

    torch's default init (with init_weights=False, BatchNorm left at identity) shrinks the pool3
    features to ~1e-8 over the network's ~90 layers, which would make every FID a rounding error.
    So the weights are filled at a trained network's scale instead, by the parity oracles' own
    python/oracles/fid_inception_net.py: He-scaled convolutions, non-trivial BatchNorm statistics.
    Saved in torch's legacy (pre-1.6, non-zip) format, as the 2019 file was [inferred from its date].
    """
    state = random_fid_inception(torch_seed).state_dict()
    out.mkdir(parents=True, exist_ok=True)
    save_legacy(state, out / INCEPTION_FILE)


def save_legacy(obj, path: Path):
    """torch.save(obj, path, _use_new_zipfile_serialization=False), reproducibly.

    torch's legacy writer names each storage by its memory address (str(storage._cdata)) and
    writes the storages sorted by that name, so its bytes change from run to run. This writes the
    same format (magic number, protocol version, sys_info, the object pickled with ("storage", ...)
    persistent ids, the sorted key list, then each storage as its element count and raw bytes), with
    the storages named 0, 1, 2, ... in the order the pickle meets them.
    """
    storages = {}  # key -> (untyped storage, dtype)
    keys = {}  # storage._cdata -> key

    class LegacyPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, torch.storage.TypedStorage):
                return None
            untyped = obj._untyped_storage
            key = keys.setdefault(untyped._cdata, str(len(keys)))
            storages.setdefault(key, (untyped, obj.dtype))
            storage_type = getattr(torch, obj._pickle_storage_type())
            return ("storage", storage_type, key, serialization.location_tag(untyped), obj._size(), None)

    sys_info = {
        "protocol_version": serialization.PROTOCOL_VERSION,
        "little_endian": sys.byteorder == "little",
        "type_sizes": {"short": serialization.SHORT_SIZE, "int": serialization.INT_SIZE,
                       "long": serialization.LONG_SIZE},
    }
    protocol = serialization.DEFAULT_PROTOCOL
    with open(path, "wb") as f:
        pickle.dump(serialization.MAGIC_NUMBER, f, protocol=protocol)
        pickle.dump(serialization.PROTOCOL_VERSION, f, protocol=protocol)
        pickle.dump(sys_info, f, protocol=protocol)
        LegacyPickler(f, protocol=protocol).dump(obj)
        ordered = sorted(storages)
        pickle.dump(ordered, f, protocol=protocol)
        f.flush()
        for key in ordered:
            untyped, dtype = storages[key]
            untyped._write_file(f, True, True, torch._utils._element_size(dtype))


def celeba_hq_256(out: Path, seed: int):
    """00000.png ... : 256x256 RGB, a smooth random colour gradient plus +-1 noise (compresses well)."""
    rng = np.random.default_rng([seed, STREAM_CELEBAHQ])
    s = CELEBAHQ_SIZE
    y, x = np.mgrid[0:s, 0:s].astype(np.float64) / (s - 1)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(CELEBAHQ_IMAGES):
        base = rng.uniform(40, 215, size=3)
        gx, gy = rng.uniform(-40, 40, size=(2, 3))
        img = base + gx * x[..., None] + gy * y[..., None] + rng.integers(-1, 2, size=(s, s, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB").save(buf, format="PNG")
        (out / f"{i:05d}.png").write_bytes(buf.getvalue())


# --- driver ----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(tmp: Path, seed: int):
    cifar10_binary(tmp / "cifar10-binary", seed)
    google_ddpm(tmp / "google-ddpm-cifar10-32", UNET_CIFAR10, SCHEDULER_CIFAR10, seed)
    google_ddpm(tmp / "google-ddpm-ema-celebahq-256", UNET_CELEBAHQ, SCHEDULER_CELEBAHQ, seed)
    score_rng = np.random.default_rng([seed, STREAM_SCORES])
    for name, offset, trigger, target, keys in RELEASED:
        released_model(tmp / name, seed + offset, trigger, target, keys, score_rng)
    pytorch_fid_inception(tmp / "pytorch-fid-inception", seed)
    celeba_hq_256(tmp / "celeba-hq-256", seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where to write the stand-ins (replaced if present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random number (default 0)")
    args = parser.parse_args()
    out = args.out_dir.resolve()
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)

    build(tmp, args.seed)

    written = sorted(p for p in tmp.rglob("*") if p.is_file())
    for p in written:
        p.chmod(0o644)  # safetensors creates its files 0600
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in written}
    record = {"seed": args.seed, "script_sha256": sha256_file(Path(__file__)), "files": files}
    write_bytes(tmp / "standins.json", (json.dumps(record, indent=2) + "\n").encode())
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    print(f"wrote {len(files)} files under {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
