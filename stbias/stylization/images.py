"""Style images: photographs that ship inside scikit-image and scikit-learn, or image files."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from stbias.errors import StbiasError

# name -> (package, loader name); every one is a colour photograph stored inside the package
EMBEDDED_IMAGES: dict[str, tuple[str, str]] = {
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "coffee": ("skimage", "coffee"),
    "chelsea": ("skimage", "chelsea"),
    "astronaut": ("skimage", "astronaut"),
    "rocket": ("skimage", "rocket"),
    "ihc": ("skimage", "immunohistochemistry"),
    "hubble": ("skimage", "hubble_deep_field"),
}


@functools.lru_cache(maxsize=32)
def _load_uint8(name: str) -> np.ndarray:
    if name in EMBEDDED_IMAGES:
        package, key = EMBEDDED_IMAGES[name]
        if package == "sklearn":
            from sklearn.datasets import load_sample_image

            return np.asarray(load_sample_image(key))
        import skimage.data

        return np.asarray(getattr(skimage.data, key)())
    path = Path(name).expanduser()
    if not path.is_file():
        raise StbiasError(
            f"unknown style image {name!r}; embedded images: {', '.join(EMBEDDED_IMAGES)}, "
            "or the path of an image file"
        )
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StbiasError(f"cannot decode style image {str(path)!r}; expected a JPEG/PNG file")
    return image[:, :, ::-1].copy()


def load_style_image(name: str, max_side: int = 256) -> torch.Tensor:
    """Load a style image as float ``(3, H, W)`` in [0, 1], its longer side at most ``max_side``.

    Args:
        name: an embedded name (see ``EMBEDDED_IMAGES``) or the path of an image file.
        max_side: the image is downscaled (area interpolation) so that its longer side fits.
    """
    image = _load_uint8(str(name))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        import cv2

        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Turn an RGB ``(3, H, W)`` image into ``channels`` (1: luma, 3: unchanged) channels."""
    if channels == 3:
        return image
    if channels == 1:
        weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    raise StbiasError(f"unsupported channel count {channels}; stylizers handle 1 or 3 channels")
