"""Scene groups of a photo corpus, and the train / val / test split made from them.

Two files show one scene when they come from one wallpaper folder or share a source stem (``bar55.jpg`` and
``bar55_2.jpg``), or when one is a crop and/or rescale of the other, in any 90-degree orientation. The last
case is found by :func:`match_scenes`, a two-stage normalised cross-correlation (NCC) of grey, high-passed
images (the high-pass keeps smooth photos from matching every other smooth photo):

1. **search**: the centre square of every photo, shrunk to 32 px (4 rotations), is correlated with every photo
   shrunk to short sides of 32-122 px (steps of 1.25): the template covers 26-100 % of the other photo's
   short side. The best position and size per ordered pair is kept.
2. **verify**: for pairs scoring over 0.45, both regions are cut from the full-resolution photos at 64 px and
   correlated again over relative sizes 0.88-1.12 (steps of 0.03) with a 15 % margin for the position.

Measured on the 155-photo Debian corpus (docs/data.md): true crop/rescale pairs verify at 0.81-0.95, the best
unrelated pair at 0.60; :data:`MATCH_THRESHOLD` is 0.75. The whole corpus takes about 45 s on two cores.

Groups, not files, are assigned to splits, so no scene is in two of them (see :func:`assign_splits`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

TEMPLATE = 32  # search-stage template side (px)
SEARCH_SHORT_SIDES = tuple(round(TEMPLATE * 1.25**i) for i in range(7))  # 32 ... 122
VERIFY = 64  # verification-stage template side (px)
VERIFY_SCALES = tuple(float(s) for s in np.arange(0.88, 1.13, 0.03))
SEARCH_THRESHOLD = 0.45
MATCH_THRESHOLD = 0.75
MIN_STD = 1.0  # grey levels: windows flatter than this never match (NCC is undefined on flat regions)

TEST_FRACTION = 0.15  # a group is "test" when every member's path hash falls below this (see assign_splits)
VAL_FRACTION = 0.12  # the other groups fill "val" up to this fraction of the files, in group-hash order


# ------------------------------------------------------------------------------------------- scene keys
def scene_key(package: str, source: str) -> str:
    """The scene a file belongs to by its name alone: its wallpaper folder, else package + normalised stem.

    ``/usr/share/wallpapers/Kay/contents/images/5120x2880.png`` -> ``wallpaper:Kay``; ``.../demo/bar55_2.jpg``
    -> ``kphotoalbum:bar`` (trailing numbers and separators are dropped, so numbered shots of one subject
    group together; grouping too much only moves photos between splits, grouping too little leaks).
    """
    folder = re.search(r"/wallpapers/([^/]+)/", source)
    if folder:
        return f"wallpaper:{folder.group(1)}"
    stem = source.replace(":", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    while True:
        shorter = re.sub(r"[_\-\s]*\d+$", "", stem)
        if shorter == stem or not shorter:
            break
        stem = shorter
    return f"{package}:{stem}"


# --------------------------------------------------------------------------------------- content match
def _high_pass(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image, dtype=np.float32)
    return grey - np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)


def _shrink(image: Image.Image, short_side: int) -> Image.Image:
    factor = short_side / min(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BOX)


def _centre_square(image: Image.Image, side: int) -> Image.Image:
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.crop((left, top, left + short, top + short)).resize((side, side), Image.Resampling.BOX)


def _templates(image: Image.Image, side: int) -> torch.Tensor:
    """(4, side, side) zero-mean unit-norm high-passed centre squares in the four 90-degree orientations."""
    square = torch.from_numpy(_high_pass(_centre_square(image, side)))
    rotations = torch.stack([torch.rot90(square, k) for k in range(4)])
    rotations = rotations - rotations.mean(dim=(1, 2), keepdim=True)
    return rotations / rotations.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None]


def _ncc(image: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """NCC of zero-mean unit-norm ``templates`` (K, s, s) at every valid position of ``image`` (H, W): (K, h, w).
    Windows with a standard deviation under MIN_STD score 0."""
    side = templates.shape[-1]
    image = image[None, None]
    ones = torch.ones(1, 1, side, side)
    correlation = F.conv2d(image, templates[:, None])[0]
    mean = F.conv2d(image, ones)[0] / side**2
    energy = F.conv2d(image * image, ones)[0] - side**2 * mean**2  # sum of squared deviations per window
    return torch.where(energy > side**2 * MIN_STD**2, correlation / energy.clamp_min(1e-6).sqrt(), 0.0)


def _verify(big: Image.Image, small: Image.Image, short_side: int, y: int, x: int, rotation: int) -> float:
    """Stage 2: NCC at 64 px of ``small``'s centre square against the region of ``big`` that stage 1 found."""
    factor = min(big.size) / short_side
    side = TEMPLATE * factor
    centre_y, centre_x = (y + TEMPLATE / 2) * factor, (x + TEMPLATE / 2) * factor
    template = _templates(small, VERIFY)[rotation : rotation + 1]
    best = 0.0
    for relative in VERIFY_SCALES:
        size = side * relative
        half = size / 2 + 0.15 * size
        box = tuple(round(v) for v in (centre_x - half, centre_y - half, centre_x + half, centre_y + half))
        pixels = round(VERIFY * 2 * half / size)
        region = big.crop(box).resize((pixels, pixels), Image.Resampling.BOX)
        best = max(best, float(_ncc(torch.from_numpy(_high_pass(region)), template).max()))
    return best


def match_scenes(images: Sequence[Image.Image], threshold: float = MATCH_THRESHOLD
                 ) -> list[tuple[int, int, float]]:
    """Pairs (i, j, score) with i < j where one image is a crop and/or rescale of the other (any 90-degree
    rotation); ``score`` is the verified NCC (1 = identical). Images may be of any mode and size."""
    return [pair for pair in verified_scores(images) if pair[2] >= threshold]


@torch.no_grad()
def verified_scores(images: Sequence[Image.Image]) -> list[tuple[int, int, float]]:
    """Every pair (i < j) that passed the search stage, with its verified score (matches and near misses)."""
    greys = [image.convert("L") for image in images]
    count = len(greys)
    templates = torch.cat([_templates(image, TEMPLATE) for image in greys])  # (4 * count, s, s)
    best = torch.zeros(count, count)
    where: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    for i, image in enumerate(greys):
        for short_side in SEARCH_SHORT_SIDES:
            scores = _ncc(torch.from_numpy(_high_pass(_shrink(image, short_side))), templates)
            width = scores.shape[-1]
            value, position = scores.flatten(1).max(dim=1)
            value, position = value.view(count, 4), position.view(count, 4)
            per_image, rotation = value.max(dim=1)
            for j in torch.nonzero(per_image > best[i]).flatten().tolist():
                best[i, j] = per_image[j]
                flat = int(position[j, rotation[j]])
                where[(i, j)] = (short_side, flat // width, flat % width, int(rotation[j]))
    pairs: dict[tuple[int, int], float] = {}
    for i in range(count):
        for j in range(count):
            if i == j or best[i, j] <= SEARCH_THRESHOLD:
                continue
            score = _verify(greys[i], greys[j], *where[(i, j)])
            key = (min(i, j), max(i, j))
            pairs[key] = max(pairs.get(key, 0.0), score)
    return sorted((i, j, score) for (i, j), score in pairs.items())


# ------------------------------------------------------------------------------------- groups and splits
def connected_groups(count: int, links: Sequence[tuple[int, int]]) -> list[int]:
    """Group index of each of ``count`` items joined by ``links`` (union-find); groups numbered by first item."""
    parent = list(range(count))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in links:
        parent[root(a)] = root(b)
    numbering: dict[int, int] = {}
    return [numbering.setdefault(root(item), len(numbering)) for item in range(count)]


def hash_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1] from ``text`` (the first 32 bits of its sha256)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(keys: Sequence[str], groups: Sequence[int]) -> list[str]:
    """Split of each file ("train" / "val" / "test") from its source key (``package:path``) and group.

    A group is **test** when the path hash of *every* member is below TEST_FRACTION: that was the whole
    held-out rule before groups existed, so the models trained on the older split never saw a test scene.
    The other groups, ordered by the hash of their sorted member keys, fill **val** until it holds
    VAL_FRACTION of all files; the rest are **train**. Every member of a group gets the group's split.
    """
    members: dict[int, list[str]] = {}
    for key, group in zip(keys, groups, strict=True):
        members.setdefault(group, []).append(key)
    split_of_group = {group: "test" for group, group_keys in members.items()
                      if all(hash_fraction(key) < TEST_FRACTION for key in group_keys)}
    others = sorted((hash_fraction("\n".join(sorted(k))), g) for g, k in members.items() if g not in split_of_group)
    val_files, val_target = 0, round(VAL_FRACTION * len(keys))
    for _, group in others:
        split_of_group[group] = "val" if val_files < val_target else "train"
        val_files += len(members[group]) if split_of_group[group] == "val" else 0
    return [split_of_group[group] for group in groups]
