"""VisTR: end-to-end video instance segmentation with a transformer (Wang et al., CVPR'21).

The VIS family the extended Kowal paper probes (its Fig. 5: VisTR with ResNet-50 and ResNet-101
backbones, layer-wise and unit-wise). As in the released code:

* a 2D CNN backbone runs over every frame (torchvision ResNet-50 / ResNet-101 with frozen batch
  norm for the real variants, a four-stage CNN for ``vistr_tiny``);
* a 1x1 input projection of the last stage to ``hidden_dim`` channels;
* a 3D (t, y, x) sine positional encoding, a third of the channels per axis, each coordinate
  normalised to (0, 2 pi]; ``temporal_encoding=False`` zeroes the t third, and the model is
  then blind to frame order (frame-wise backbone, attention over a token set whose positions
  are the same in every frame, learned queries that do not depend on the input's order);
* a post-norm transformer encoder over the T*h*w space-time tokens (t slowest), then a decoder
  with ``num_frames * num_instances`` learned queries: query ``t * num_instances + i`` is
  instance ``i`` in frame ``t``;
* a class head and a box head on the last decoder output, and VisTR's mask head: per frame, a
  multi-head attention map of each instance query over that frame's encoder memory, an FPN-like
  convolutional head over the backbone's res4, res3, res2 (the last layer a deformable
  convolution), then a 3D convolution over each instance's frames.

``forward(x)`` takes the packed clip ``(B, C, T, H, W)`` (T = ``num_frames``) and returns a dict:
``pred_logits`` ``(B, N, num_classes + 1)`` (per instance the mean of its T frame queries' logits,
as VisTR's inference does; the last class is "no object"), ``pred_boxes`` ``(B, N, T, 4)``
(cx, cy, w, h in [0, 1]) and ``pred_masks`` ``(B, N, T, ceil(H/4), ceil(W/4))`` mask logits, with
N = ``num_instances``.

Layer taps (layout ``channels_last``: every tap is ``(B, ..., C)``, pooled over the middle axes):
``taps.res2`` .. ``taps.res5`` hold the backbone stages as ``(B, T, h, w, C)``; the encoder and
decoder run batch-first, so ``transformer.encoder.layers.<i>`` yields the space-time tokens
``(B, T*h*w, C)`` and ``transformer.decoder.layers.<i>`` the instance queries
``(B, T*N, C)``.

Released checkpoints (``vistr_r50.pth``, ``vistr_r101.pth``: ``{"model": state}`` with the keys of
VisTR's ``VisTRsegm``) load through ``model.checkpoint=<file>``: :meth:`VisTR.remap_state_dict`
renames ``vistr.backbone.0.body.*`` to ``backbone.*`` and ``vistr.*`` to ``*``; the mask head's
keys (``bbox_attention``, ``mask_head``, ``insmask_head``) keep their names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import DeformConv2d
from torchvision.ops.misc import FrozenBatchNorm2d

from stbias.errors import StbiasError

BACKBONES = ("resnet50", "resnet101", "tiny")
STAGES = ("res2", "res3", "res4", "res5")
# released key prefix -> this module's, longest first
_RELEASED_PREFIXES = (("vistr.backbone.0.body.", "backbone."), ("vistr.", ""))


class ResNetBackbone(nn.Module):
    """A torchvision ResNet's stem and four stages (no pooling, no classifier), frozen BN."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.channels = tuple(
            getattr(net, f"layer{i}")[-1].conv3.out_channels for i in (1, 2, 3, 4)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """A four-stage frame-wise CNN with ResNet's strides (4, 8, 16, 32), for CPU-sized runs."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        c2, c3, c4, c5 = self.channels
        self.conv1 = _conv_bn_relu(in_channels, c2, 2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _conv_bn_relu(c2, c2, 1)
        self.layer2 = _conv_bn_relu(c2, c3, 2)
        self.layer3 = _conv_bn_relu(c3, c4, 2)
        self.layer4 = _conv_bn_relu(c4, c5, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


class Tap(nn.Identity):
    """An identity the probe hooks: one backbone stage as ``(B, T, h, w, C)``."""


def sine_position_3d(
    batch: int, frames: int, height: int, width: int, dim: int, temporal: bool = True
) -> torch.Tensor:
    """VisTR's 3D sine encoding ``(B, T*h*w, dim)``: (t, y, x) thirds, t slowest in the sequence.

    Each coordinate counts from 1 and is normalised by its largest value to (0, 2 pi], as the
    released ``PositionEmbeddingSine(normalize=True)``; ``temporal=False`` zeroes the t third.
    """
    feats = dim // 3
    if feats * 3 != dim or feats % 2:
        raise StbiasError(f"hidden_dim={dim} must be 3 times an even number for the 3D encoding")
    eps, scale = 1e-6, 2 * math.pi
    axes = [
        torch.arange(1, n + 1, dtype=torch.float32) / (n + eps) * scale
        for n in (frames, height, width)
    ]
    dim_t = torch.arange(feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)
    parts = []
    for axis in axes:
        pos = axis[:, None] / dim_t
        parts.append(torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1))
    pz, py, px = parts
    if not temporal:
        pz = torch.zeros_like(pz)
    grid = torch.cat(
        (
            pz[:, None, None, :].expand(frames, height, width, feats),
            py[None, :, None, :].expand(frames, height, width, feats),
            px[None, None, :, :].expand(frames, height, width, feats),
        ),
        dim=-1,
    )
    return grid.reshape(1, frames * height * width, dim).expand(batch, -1, -1)


class TransformerEncoderLayer(nn.Module):
    """DETR's post-norm encoder layer, batch-first: ``(B, S, C)`` in and out."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerDecoderLayer(nn.Module):
    """DETR's post-norm decoder layer, batch-first: queries ``(B, Q, C)`` over memory."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(
            d_model, nhead, dropout=dropout, batch_first=True
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


class TransformerDecoder(nn.Module):
    """The decoder layers and the final norm (applied to the last layer's output)."""

    def __init__(self, layers: Sequence[nn.Module], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class Transformer(nn.Module):
    """VisTR's encoder-decoder (DETR's, no norm after the encoder), batch-first."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
    ) -> None:
        super().__init__()
        args = (d_model, nhead, dim_feedforward, dropout)
        self.encoder = TransformerEncoder(
            [TransformerEncoderLayer(*args) for _ in range(num_encoder_layers)]
        )
        self.decoder = TransformerDecoder(
            [TransformerDecoderLayer(*args) for _ in range(num_decoder_layers)], d_model
        )
        self.d_model, self.nhead = d_model, nhead
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, query_embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded queries ``(B, Q, C)`` and the encoder memory ``(B, S, C)``."""
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        memory = self.encoder(src, pos)
        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos)
        return hs, memory


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MHAttentionMap(nn.Module):
    """Per-head attention weights of queries over a 2D memory, softmax over the whole map."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.dim = num_heads, dim
        self.q_linear = nn.Linear(dim, dim)
        self.k_linear = nn.Linear(dim, dim)
        for linear in (self.q_linear, self.k_linear):
            nn.init.zeros_(linear.bias)
            nn.init.xavier_uniform_(linear.weight)
        self.normalize_fact = float(dim / num_heads) ** -0.5

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``q`` ``(B, Q, C)``, ``k`` ``(B, C, h, w)`` -> ``(B, Q, heads, h, w)``."""
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        head = self.dim // self.num_heads
        qh = q.view(q.shape[0], q.shape[1], self.num_heads, head)
        kh = k.view(k.shape[0], self.num_heads, head, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        return F.softmax(weights.flatten(2), dim=-1).view_as(weights)


def _group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    # VisTR's group counts (8, and 4 in the 3D head) where they divide; fewer for narrow heads
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class MaskHeadSmallConv(nn.Module):
    """VisTR's per-frame mask head: convolutions over [memory, attention maps], FPN skips."""

    def __init__(self, dim: int, fpn_dims: Sequence[int], context_dim: int) -> None:
        super().__init__()
        inter = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = _group_norm(dim)
        self.lay2 = nn.Conv2d(dim, inter[1], 3, padding=1)
        self.gn2 = _group_norm(inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = _group_norm(inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = _group_norm(inter[3])
        self.gn5 = _group_norm(inter[4])
        self.conv_offset = nn.Conv2d(inter[3], 18, 1)
        self.dcn = DeformConv2d(inter[3], inter[4], 3, padding=1, bias=False)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter[3], 1)
        self.out_channels = inter[4]
        for name, m in self.named_modules():
            if name == "conv_offset":
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(
        self, x: torch.Tensor, attention: torch.Tensor, fpns: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``x`` ``(B, C, h, w)``, ``attention`` ``(B, Q, heads, h, w)`` -> ``(B*Q, C', H/4, W/4)``.

        ``fpns`` are the frame's res4, res3 and res2 features.
        """
        queries = attention.shape[1]
        x = torch.cat([x.repeat_interleave(queries, dim=0), attention.flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn in (
            (self.adapter1, self.lay3, self.gn3),
            (self.adapter2, self.lay4, self.gn4),
        ):
            skip = adapter(fpns[0] if adapter is self.adapter1 else fpns[1])
            skip = skip.repeat_interleave(queries, dim=0)
            x = F.relu(gn(lay(skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest"))))
        skip = self.adapter3(fpns[2]).repeat_interleave(queries, dim=0)
        x = skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return F.relu(self.gn5(self.dcn(x, self.conv_offset(x))))


def _instance_head(channels: int) -> nn.Sequential:
    """VisTR's 3D head over each instance's frames (24 -> 12 -> 12 -> 12 -> 1 at full size)."""
    mid = max(channels // 2, 1)
    layers: list[nn.Module] = []
    c_in = channels
    for _ in range(3):
        layers += [
            nn.Conv3d(c_in, mid, 3, padding=2, dilation=2),
            _group_norm(mid, 4),
            nn.ReLU(),
        ]
        c_in = mid
    return nn.Sequential(*layers, nn.Conv3d(mid, 1, 1))


class DotMaskHead(nn.Module):
    """A MaskFormer-style mask head: each query's embedding dotted with per-pixel features.

    The pixel features sum 1x1 projections of the frame's encoder memory and its res4, res3 and
    res2 features, upsampled to res2's size, then one 3x3 convolution; an MLP maps each decoded
    query to a mask embedding of the same width. Fewer layers between the queries and the masks
    than VisTR's head, so a small model learns to segment in a few hundred steps.
    """

    def __init__(self, dim: int, fpn_dims: Sequence[int]) -> None:
        super().__init__()
        self.memory_proj = nn.Conv2d(dim, dim, 1)
        self.adapters = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in fpn_dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), _group_norm(dim), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )
        self.mask_embed = MLP(dim, dim, dim, 3)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, fpns: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``queries`` ``(B, T, N, C)``, ``memory`` ``(B, T, C, h, w)``, ``fpns`` res4, res3, res2
        ``(B, T, C_k, h_k, w_k)`` -> mask logits ``(B, N, T, H/4, W/4)``."""
        size = fpns[-1].shape[-2:]
        pixel = F.interpolate(self.memory_proj(memory.flatten(0, 1)), size=size, mode="bilinear")
        for adapter, feat in zip(self.adapters, fpns, strict=True):
            skip = adapter(feat.flatten(0, 1))
            pixel = pixel + F.interpolate(skip, size=size, mode="bilinear")
        pixel = self.fuse(pixel).unflatten(0, queries.shape[:2])  # (B, T, C, H/4, W/4)
        return torch.einsum("btnc,btchw->bnthw", self.mask_embed(queries), pixel)


MASK_HEADS = ("vistr", "dot")


class VisTR(nn.Module):
    """VisTR with its mask head; see the module docstring for inputs, outputs and taps.

    Args:
        backbone: ``resnet50``, ``resnet101`` (torchvision, frozen batch norm) or ``tiny``.
        num_classes: object categories (the class head has one more: "no object").
        num_frames: frames per clip (the decoder has one query per instance per frame).
        num_instances: instances per clip (N).
        hidden_dim: transformer width (3 times an even number: the 3D encoding).
        nheads: attention heads.
        enc_layers: encoder layers.
        dec_layers: decoder layers.
        dim_feedforward: the transformer's feed-forward width.
        dropout: the transformer's dropout.
        temporal_encoding: False drops the t part of the positional encoding.
        tiny_channels: the tiny backbone's stage widths.
        in_channels: input channels (the tiny backbone; ResNets take 3).
        mask_head: ``vistr`` (the released head, which released checkpoints load into) or
            ``dot`` (:class:`DotMaskHead`, for small models trained from scratch).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        num_classes: int = 41,
        num_frames: int = 36,
        num_instances: int = 10,
        hidden_dim: int = 384,
        nheads: int = 8,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        temporal_encoding: bool = True,
        tiny_channels: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 3,
        mask_head: str = "vistr",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise StbiasError(f"unknown VisTR backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        if mask_head not in MASK_HEADS:
            raise StbiasError(
                f"unknown VisTR mask_head {mask_head!r}; valid: {', '.join(MASK_HEADS)}"
            )
        for key, value in (("num_frames", num_frames), ("num_instances", num_instances)):
            if int(value) < 1:
                raise StbiasError(f"VisTR {key}={value}; give a positive count")
        if backbone == "tiny":
            self.backbone: nn.Module = TinyBackbone(tiny_channels, in_channels)
        elif in_channels != 3:
            raise StbiasError(
                f"VisTR {backbone} takes RGB clips (in_channels=3), not {in_channels}"
            )
        else:
            self.backbone = ResNetBackbone(backbone)
        channels = self.backbone.channels
        self.taps = nn.ModuleDict({stage: Tap() for stage in STAGES})
        self.num_frames, self.num_instances = int(num_frames), int(num_instances)
        self.num_queries = self.num_frames * self.num_instances
        self.hidden_dim, self.temporal_encoding = int(hidden_dim), bool(temporal_encoding)
        sine_position_3d(1, 1, 1, 1, self.hidden_dim)  # checks hidden_dim early
        self.input_proj = nn.Conv2d(channels[-1], hidden_dim, 1)
        self.transformer = Transformer(
            hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout
        )
        self.query_embed = nn.Embedding(self.num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.mask_head_kind = mask_head
        if mask_head == "dot":
            self.dot_mask_head = DotMaskHead(hidden_dim, [channels[2], channels[1], channels[0]])
            return
        self.bbox_attention = MHAttentionMap(hidden_dim, nheads)
        self.mask_head = MaskHeadSmallConv(
            hidden_dim + nheads, [channels[2], channels[1], channels[0]], hidden_dim
        )
        self.insmask_head = _instance_head(self.mask_head.out_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.is_tensor(x) or x.ndim != 5:
            shown = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise StbiasError(f"VisTR takes one clip tensor (B, C, T, H, W), got {shown}")
        b, _, t, height, width = x.shape
        if t != self.num_frames:
            raise StbiasError(
                f"VisTR was built for {self.num_frames}-frame clips (one query per instance and "
                f"frame), got {t} frames; set model.input.frames={t} or feed {self.num_frames}"
            )
        frames = x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*T, C, H, W)
        features = self.backbone(frames)
        for stage, feat in zip(STAGES, features, strict=True):
            self.taps[stage](feat.unflatten(0, (b, t)).permute(0, 1, 3, 4, 2))
        src = self.input_proj(features[-1])  # (B*T, D, h, w)
        d, h, w = src.shape[1:]
        src = src.unflatten(0, (b, t)).permute(0, 1, 3, 4, 2).reshape(b, t * h * w, d)
        pos = sine_position_3d(b, t, h, w, d, self.temporal_encoding).to(src)
        hs, memory = self.transformer(src, pos, self.query_embed.weight)
        n = self.num_instances
        logits = self.class_embed(hs).unflatten(1, (t, n)).mean(1)
        boxes = self.bbox_embed(hs).sigmoid().unflatten(1, (t, n)).transpose(1, 2)
        memory = memory.reshape(b, t, h, w, d).permute(0, 1, 4, 2, 3)  # (B, T, D, h, w)
        queries = hs.unflatten(1, (t, n))
        fpn = [f.unflatten(0, (b, t)) for f in features[:3]]
        if self.mask_head_kind == "dot":
            masks = self.dot_mask_head(queries, memory, [fpn[2], fpn[1], fpn[0]])
            return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}
        per_frame = []
        for i in range(t):
            attention = self.bbox_attention(queries[:, i], memory[:, i])
            masks = self.mask_head(
                memory[:, i], attention, [fpn[2][:, i], fpn[1][:, i], fpn[0][:, i]]
            )
            per_frame.append(masks.unflatten(0, (b, n)))  # (B, N, C', H/4, W/4)
        stacked = torch.stack(per_frame, dim=3)  # (B, N, C', T, H/4, W/4)
        masks = self.insmask_head(stacked.flatten(0, 1)).squeeze(1).unflatten(0, (b, n))
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    @staticmethod
    def remap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The released ``VisTRsegm`` keys renamed to this module's (others unchanged)."""
        renamed = {}
        for key, value in state.items():
            for old, new in _RELEASED_PREFIXES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            renamed[key] = value
        return renamed


def vistr(**kwargs) -> VisTR:
    """The builder the ``vistr_*`` YAMLs name (keyword arguments as :class:`VisTR`)."""
    return VisTR(**kwargs)
