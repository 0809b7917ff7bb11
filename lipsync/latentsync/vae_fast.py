"""Fused CUDA path for the SD VAE: same diffusers model and weights, far fewer memory passes.

`enable_fast_vae(vae)` switches a CUDA `LatentVAE` to channels-last and replaces the forward of the
encoder's and decoder's resnets and output norms with: our GroupNorm+SiLU kernel (kernels.py; conv1's
bias enters the second norm as a per-channel offset), bias-free convolutions, and one pass for conv2's
(and the shortcut's) bias plus the residual. The decoder's up-samplers (nearest 2x + 3x3 conv) run as
one 2x2 convolution of the small input with four output phases (unet_fast.nearest2x_conv: 2.25x fewer
FLOPs, about a quarter of the decoder's at 512 px), interleaved by kernels.phase_interleave in one pass
(32 frames at 512 px: 152.1 ms against 156.6 with four strided adds, H200). The attention blocks and the down-samplers stay
diffusers'.
`disable_fast_vae` undoes it (the weights stay channels-last).

Why: diffusers' decoder in NCHW spends half its time outside the convolutions (cuDNN's layout
conversions, GroupNorm, SiLU and the residual as separate passes), and plain channels-last is slower
still (PyTorch's GroupNorm copies NHWC input to NCHW). bench/latentsync_vae.py, H200, bf16, 16 frames:
decode at 512 px 207 ms NCHW, 233 ms channels-last, 94 ms fused (80 ms with the phase up-samplers);
at 256 px 51 / 57 / 26 ms (19 ms).
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from lipsync.latentsync import kernels
from lipsync.latentsync.unet_fast import nearest2x_conv, nearest2x_conv_weights, resnet_output


def _is_plain_resnet(module) -> bool:
    """A ResnetBlock2D of the plain decoder kind: no time embedding, no resampling, scale 1, 3x3 convs."""
    return (type(module).__name__ == "ResnetBlock2D" and module.time_emb_proj is None and module.upsample is None
            and module.downsample is None and module.output_scale_factor == 1 and module.conv1.kernel_size == (3, 3)
            and module.conv1.padding == (1, 1) and isinstance(module.norm1, torch.nn.GroupNorm)
            and (module.conv_shortcut is None or module.conv_shortcut.kernel_size == (1, 1)))


def _is_plain_upsampler(module) -> bool:
    """An Upsample2D that is nearest 2x then a 3x3, padding 1 conv (the SD decoder's kind)."""
    return (type(module).__name__ == "Upsample2D" and module.use_conv and not module.use_conv_transpose
            and module.interpolate and module.norm is None and module.name == "conv"
            and module.conv.kernel_size == (3, 3) and module.conv.padding == (1, 1) and module.conv.stride == (1, 1))


@torch.no_grad()
def enable_fast_vae(vae) -> bool:
    """Switch `vae` (a LatentVAE on CUDA) to the fused path; False (unchanged) when unsupported."""
    model = vae.model
    if not (kernels.available() and next(model.parameters()).is_cuda):
        return False
    coders = (model.encoder, model.decoder)
    resnets = [m for coder in coders for m in coder.modules() if type(m).__name__ == "ResnetBlock2D"]
    if not resnets or not all(_is_plain_resnet(m) for m in resnets) or not all(
            isinstance(c.conv_norm_out, torch.nn.GroupNorm) for c in coders):
        return False
    disable_fast_vae(vae)
    vae.channels_last = True
    model.to(memory_format=torch.channels_last)
    for module in resnets:
        module.forward = types.MethodType(_resnet_forward, module)
    for module in model.decoder.modules():
        if _is_plain_upsampler(module):
            module._fast_phases = nearest2x_conv_weights(module.conv)
            module.forward = types.MethodType(_upsample_forward, module)
    model.encoder.forward = types.MethodType(_encoder_forward, model.encoder)
    model.decoder.forward = types.MethodType(_decoder_forward, model.decoder)
    vae.fast = True
    return True


def disable_fast_vae(vae) -> None:
    for coder in (vae.model.encoder, vae.model.decoder):
        for module in coder.modules():
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_fast_phases", None)
    vae.fast = False


def _gn_silu(x: torch.Tensor, norm: torch.nn.GroupNorm, add: torch.Tensor | None = None) -> torch.Tensor:
    return kernels.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, add=add, silu=True)


def _resnet_forward(self, x: torch.Tensor, temb=None, *args, **kwargs) -> torch.Tensor:
    h = F.conv2d(_gn_silu(x, self.norm1), self.conv1.weight, None, padding=1)
    return resnet_output(self, _gn_silu(h, self.norm2, self.conv1.bias.expand(h.shape[0], -1)), x)


def _upsample_forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
    h, w = hidden_states.shape[-2:]
    if output_size is not None and tuple(output_size) != (2 * h, 2 * w):
        return type(self).forward(self, hidden_states, output_size, *args, **kwargs)
    return nearest2x_conv(hidden_states, self._fast_phases, self.conv.bias)


def _encoder_forward(self, sample: torch.Tensor) -> torch.Tensor:
    sample = self.conv_in(sample)
    for down_block in self.down_blocks:
        sample = down_block(sample)
    sample = self.mid_block(sample)
    return self.conv_out(_gn_silu(sample, self.conv_norm_out))


def _decoder_forward(self, sample: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
    sample = self.conv_in(sample)
    sample = self.mid_block(sample, latent_embeds)
    for up_block in self.up_blocks:
        sample = up_block(sample, latent_embeds)
    return self.conv_out(_gn_silu(sample, self.conv_norm_out))
