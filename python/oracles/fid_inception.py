"""Oracle: pytorch-fid's InceptionV3 (pool3, resize_input, normalize_input) on seeded random weights.

args: SEED WEIGHTS_OUT.safetensors. The network is fid_inception_net.random_fid_inception(SEED)
(the real weights cannot be downloaded here); its state_dict is written to WEIGHTS_OUT, and the
pool3 features of `images` returned.
"""
from pytorch_fid import inception as fid
from safetensors.torch import save_file

from fid_inception_net import random_fid_inception
from oracle_io import io

inputs, save, args = io()
seed, weights_out = int(args[0]), args[1]


net = random_fid_inception(seed)
state = {k: v.contiguous() for k, v in net.state_dict().items()}
save_file(state, weights_out)
# InceptionV3 calls fid_inception_v3(), which downloads; hand it our network instead.
fid.fid_inception_v3 = lambda: net
model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
model.eval()
features = model(inputs["images"])[0].squeeze(-1).squeeze(-1)
save({"features": features})
