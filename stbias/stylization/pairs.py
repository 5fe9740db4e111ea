"""Static and dynamic pairs from one clip: anchor, shuffled anchor, restyled clip.

Three views per clip share the anchor ``x_a = style_a(v)``: the static pair is ``(x_a,
shuffle(x_a))`` (same frames, another order) and the dynamic pair is ``(x_a, style_b(v))`` (same
frames and order, another style). Every random choice of clip ``i`` comes from a generator seeded
by ``(seed, index_i)``, so a clip gets the same styles and permutations whatever batch it is in.
Shuffling acts on what the model receives: with ``frames`` (the frame count of each of the
model's pathways) the shuffled views are left to the caller, who packs the rendered float views
and reorders each pathway's frames by the drawn permutations (:func:`shuffled_views`), never
re-sampling them. Views go one way: float clips out, nothing of the model's packing in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from stbias.errors import StbiasError
from stbias.stylization.base import Stylizer
from stbias.stylization.draws import clip_generator, clip_indices, draw_styles
from stbias.stylization.flow import FLOW_JITTERS, check_flow_jitter, make_flow_pair_views

Frames = torch.Tensor | list[torch.Tensor]
SHUFFLE_MODES = ("one", "both")


def random_permutation(length: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn permutation of ``range(length)`` that is not the identity."""
    if length < 2:
        raise StbiasError(f"cannot shuffle a clip of {length} frame(s); static pairs need T >= 2")
    identity = torch.arange(length)
    while True:
        perm = torch.randperm(length, generator=generator)
        if not torch.equal(perm, identity):
            return perm


def _pathways(x: Frames) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(p, torch.Tensor) for p in x):
        return list(x)
    raise StbiasError("frames must be a Tensor (B, C, T, H, W) or a list of such tensors")


def _like(x: Frames, pathways: list[torch.Tensor]) -> Frames:
    return pathways[0] if isinstance(x, torch.Tensor) else pathways


def permute_frames(x: Frames, perms: Sequence[torch.Tensor]) -> Frames:
    """Reorder the frames of every clip and pathway: ``out[b, :, t] = x[b, :, perm[b, t]]``.

    Args:
        x: a Tensor ``(B, C, T, H, W)`` or a list of per-pathway tensors (SlowFast
            ``[slow, fast]``).
        perms: one ``(B, T_p)`` long tensor per pathway.
    """
    pathways = _pathways(x)
    if len(perms) != len(pathways):
        raise StbiasError(f"got {len(perms)} permutations for {len(pathways)} pathways")
    out = []
    for p, perm in zip(pathways, perms):
        if perm.shape != (p.shape[0], p.shape[2]):
            raise StbiasError(
                f"permutation shape {tuple(perm.shape)} does not match (B, T) = "
                f"{(p.shape[0], p.shape[2])}"
            )
        index = perm.to(p.device).view(p.shape[0], 1, p.shape[2], *([1] * (p.dim() - 3)))
        out.append(torch.take_along_dim(p, index.expand(-1, p.shape[1], -1, *p.shape[3:]), dim=2))
    return _like(x, out)


def draw_permutations(
    x: Frames, generators: torch.Generator | Sequence[torch.Generator]
) -> list[torch.Tensor]:
    """One non-identity permutation per clip and pathway, ``(B, T_p)`` per pathway.

    Clip ``b`` draws from ``generators[b]`` (or every clip from one shared generator), pathway by
    pathway.
    """
    pathways = _pathways(x)
    batch = pathways[0].shape[0]
    if isinstance(generators, torch.Generator):
        generators = [generators] * batch
    if len(generators) != batch:
        raise StbiasError(f"got {len(generators)} generators for a batch of {batch} clips")
    rows = [[random_permutation(p.shape[2], g) for p in pathways] for g in generators]
    return [torch.stack([row[k] for row in rows]) for k in range(len(pathways))]


def shuffle_frames(
    x: Frames, generator: torch.Generator | Sequence[torch.Generator] | None = None
) -> Frames:
    """Shuffle the frames of every clip and pathway by a non-identity permutation.

    Args:
        x: a Tensor ``(B, C, T, H, W)`` or a list of per-pathway tensors; each pathway's own
            frames are reordered (never re-sampled), so both hold the same multiset of frames.
        generator: one generator, or one per clip; ``None`` uses a fresh unseeded one.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    return permute_frames(x, draw_permutations(x, generator))


def shuffled_views(views: dict[str, Any]) -> dict[str, Any]:
    """``views`` (changed in place and returned) with its ``shuffled`` views added.

    ``views["shuffled"]`` maps a view name to ``(source view, permutations)``: the view is the
    source's frames reordered, pathway by pathway (:func:`permute_frames`). Views that are
    already there are left as they are.
    """
    for name, (source, perms) in views.get("shuffled", {}).items():
        if name not in views:
            views[name] = permute_frames(views[source], perms)
    return views


def make_pair_views(
    clip01: torch.Tensor,
    stylizer: Stylizer,
    index: int | Sequence[int] | torch.Tensor,
    seed: int = 0,
    *,
    frames: Sequence[int] | None = None,
    shuffle: str = "one",
    balanced: bool = True,
    **context: Any,
) -> dict[str, Any]:
    """The views of one static and one dynamic pair per clip.

    Args:
        clip01: float ``(B, C, T, H, W)`` in [0, 1], the original clips.
        stylizer: renders a clip in one of its ``styles``.
        index: the dataset index of each clip (an int ``i`` means ``i, i + 1, ...``).
        seed: with the index, seeds every random choice of a clip.
        frames: the frame count of each pathway of the model's input (``[T_slow, T_fast]`` for
            SlowFast) the shuffles permute; the shuffled views are then left out (the caller
            packs ``anchor`` and adds them with :func:`shuffled_views`). ``None``: the clip's
            own ``T``, and the shuffled float views are included.
        shuffle: ``"one"`` — static pair is (anchor, shuffled anchor); ``"both"`` — two
            independently shuffled copies of the anchor (view ``static_anchor`` is the first).
        balanced: every clip gives one static and one dynamic pair; otherwise each clip gives
            one of them, drawn at random (the authors' sampling; see ``factor``).
        **context: passed to the stylizer (``ids``, ``frame_indices`` for precomputed styles).

    Returns:
        ``anchor``, ``dynamic`` (float clips like ``clip01``) and, without ``frames``,
        ``static`` (and ``static_anchor`` when ``shuffle="both"``); ``shuffled``: view name ->
        ``(source view, permutations)`` of the shuffled views; ``pairs``: factor -> the two view
        names forming that factor's pairs; ``factor``: factor -> ``(B,)`` bool mask of the clips
        whose pair counts; ``styles``: ``(B, 2)`` style indices ``a, b``; ``perms``: the
        permutations of the static view, one ``(B, T_p)`` per pathway.
    """
    if shuffle not in SHUFFLE_MODES:
        raise StbiasError(f"unknown shuffle mode {shuffle!r}; valid: {', '.join(SHUFFLE_MODES)}")
    batch = clip01.shape[0]
    generators = [clip_generator(seed, i) for i in clip_indices(index, batch)]
    styles = torch.tensor([draw_styles(stylizer.num_styles, g) for g in generators])
    coins = torch.tensor([bool(torch.rand(1, generator=g) < 0.5) for g in generators])
    anchor = stylizer(clip01, styles[:, 0], **context)
    dynamic = stylizer(clip01, styles[:, 1], **context)
    lengths = [clip01.shape[2]] if frames is None else [int(t) for t in frames]
    perms = _draw_orders(lengths, generators)
    shuffled = {"static": ("anchor", perms)}
    pairs = {"static": ("anchor", "static"), "dynamic": ("anchor", "dynamic")}
    if shuffle == "both":
        shuffled["static_anchor"] = ("anchor", _draw_orders(lengths, generators))
        pairs["static"] = ("static_anchor", "static")
    views: dict[str, Any] = {"anchor": anchor, "dynamic": dynamic, "shuffled": shuffled}
    if balanced:
        factor = {"static": torch.ones(batch, dtype=torch.bool), "dynamic": torch.ones_like(coins)}
    else:
        factor = {"static": coins, "dynamic": ~coins}
    views.update(pairs=pairs, factor=factor, styles=styles, perms=perms)
    return shuffled_views(views) if frames is None else views


def _draw_orders(
    lengths: Sequence[int], generators: Sequence[torch.Generator]
) -> list[torch.Tensor]:
    """One non-identity permutation per clip and pathway of ``lengths`` frames, ``(B, T_p)``
    per pathway (clip by clip, pathway by pathway, as :func:`draw_permutations` draws)."""
    rows = [[random_permutation(t, g) for t in lengths] for g in generators]
    return [torch.stack([row[k] for row in rows]) for k in range(len(lengths))]


def view_names(views: dict[str, Any]) -> list[str]:
    """The names of the model-input views in ``views``, in a fixed order."""
    names = ["anchor", "static", "dynamic", "static_anchor"]
    return [n for n in names if n in views]


def stack_views(views: dict[str, Any], names: Sequence[str] | None = None) -> Frames:
    """Concatenate views along the batch axis for one forward pass (per pathway for lists)."""
    names = list(names) if names is not None else view_names(views)
    parts = [_pathways(views[n]) for n in names]
    stacked = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
    return _like(views[names[0]], stacked)


def split_views(output: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Split a batched output of ``stack_views``' input back into one chunk per view name."""
    if output.shape[0] % len(names):
        raise StbiasError(f"batch of {output.shape[0]} does not split into {len(names)} views")
    return dict(zip(names, output.chunk(len(names))))


class PairSampler:
    """A stylizer plus the pair options: ``sampler(clip01, index)`` -> the views of the pairs.

    Args:
        stylizer: the stylizer the views are rendered with.
        seed: seeds, with each clip's index, the styles, permutations and jitters.
        shuffle: ``"one"`` or ``"both"`` (see ``make_pair_views``).
        balanced: one static and one dynamic pair per clip (default) or one random factor.
        two_stream: RGB + optical-flow pairs (``make_flow_pair_views``) instead of frame shuffling.
        flow_jitter: the static pair's flow jitter, ``reference`` (the authors' per-frame
            ``ExtFlowColorJitter``, the default) or ``per_clip`` (stbias's earlier one-draw HSV
            jitter); see :mod:`stbias.stylization.flow`.
        flow_jitter_settings: the ranges of each jitter by name (``{"reference": {...},
            "per_clip": {...}}``); the defaults for any left out.
        name: the stylization's name in results.
    """

    def __init__(
        self,
        stylizer: Stylizer,
        seed: int = 0,
        shuffle: str = "one",
        balanced: bool = True,
        two_stream: bool = False,
        flow_jitter: str = "reference",
        flow_jitter_settings: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
    ):
        if shuffle not in SHUFFLE_MODES:
            raise StbiasError(
                f"unknown shuffle mode {shuffle!r}; valid: {', '.join(SHUFFLE_MODES)}"
            )
        self.stylizer = stylizer
        self.seed = int(seed)
        self.shuffle = shuffle
        self.balanced = bool(balanced)
        self.two_stream = bool(two_stream)
        if not isinstance(flow_jitter, str):
            raise StbiasError(
                f"flow_jitter={flow_jitter!r}: give the jitter's name ({', '.join(FLOW_JITTERS)}) "
                "and its ranges in flow_jitter_settings"
            )
        settings = dict(flow_jitter_settings or {})
        unknown = sorted(set(settings) - set(FLOW_JITTERS))
        if unknown:
            raise StbiasError(
                f"flow_jitter_settings has unknown jitter(s) {unknown}; valid: "
                f"{', '.join(FLOW_JITTERS)}"
            )
        # checked now, so a bad name or range stops a run before any data is read
        self.jitter_settings = check_flow_jitter(flow_jitter, settings.get(flow_jitter))
        for kind, ranges in settings.items():
            check_flow_jitter(kind, ranges)
        self.flow_jitter = flow_jitter
        self.name = name or stylizer.name

    def __call__(
        self,
        clip01: torch.Tensor,
        index: int | Sequence[int] | torch.Tensor,
        frames: Sequence[int] | None = None,
        **context: Any,
    ) -> dict[str, Any]:
        """The float views of ``clip01`` (``(B, C, T, H, W)`` in [0, 1]) for clips ``index``.

        Frame-shuffled pairs: see :func:`make_pair_views` (``frames``: the model's pathway
        frame counts, the shuffled views then left to the caller); two-stream pairs: every
        view is ``[rgb, flow image]`` (:func:`~stbias.stylization.flow.make_flow_pair_views`).
        ``context`` goes to the stylizer (``ids``, ``frame_indices``) and, for two-stream pairs,
        may hold ``flow_image``.
        """
        if self.two_stream:
            return make_flow_pair_views(
                clip01,
                self.stylizer,
                index,
                self.seed,
                balanced=self.balanced,
                flow_jitter=self.flow_jitter,
                jitter_settings=self.jitter_settings,
                **context,
            )
        return make_pair_views(
            clip01,
            self.stylizer,
            index,
            self.seed,
            frames=frames,
            shuffle=self.shuffle,
            balanced=self.balanced,
            **context,
        )
