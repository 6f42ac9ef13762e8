"""Scene groups and the train/val/test split: crops, rescales and rotations of one photo are one group, and
no group is in two splits."""

import json
from collections import Counter

import pytest
from PIL import Image

from turbosr.corpus import sample_path, split_corpus
from turbosr.scene_groups import (
    TEST_FRACTION,
    assign_splits,
    connected_groups,
    hash_fraction,
    match_scenes,
    scene_key,
)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """A 'photo', a portrait crop of it, a rescaled copy, a rotated crop, and two unrelated photos."""
    base = Image.open(sample_path("coffee")).convert("RGB").resize((600, 400), Image.Resampling.BICUBIC)
    portrait = base.crop((170, 0, 410, 400))  # 240 x 400: a portrait crop, 40 % of the width
    return {
        "base": base,
        "portrait": portrait,
        "rescaled": base.resize((420, 280), Image.Resampling.LANCZOS),
        "rotated": portrait.transpose(Image.Transpose.ROTATE_90),
        "cat": Image.open(sample_path("chelsea")).convert("RGB").resize((450, 300), Image.Resampling.BICUBIC),
        "astronaut": Image.open(sample_path("astronaut")).convert("RGB").resize((384, 384), Image.Resampling.BICUBIC),
    }


def test_crops_rescales_and_rotations_are_one_group(photos):
    names = list(photos)
    matches = match_scenes(list(photos.values()))
    groups = connected_groups(len(names), [(i, j) for i, j, _ in matches])
    group = dict(zip(names, groups, strict=True))
    assert group["base"] == group["portrait"] == group["rescaled"] == group["rotated"]
    assert len({group["base"], group["cat"], group["astronaut"]}) == 3
    pairs = {(names[i], names[j]) for i, j, _ in matches}
    assert ("base", "portrait") in pairs  # found directly, not only through another member
    assert all(0.75 <= score <= 1.0 for *_, score in matches)


def test_scene_keys_group_wallpaper_folders_and_numbered_stems():
    assert scene_key("plasma", "/usr/share/wallpapers/Kay/contents/images/5120x2880.png") == "wallpaper:Kay"
    assert scene_key("plasma", "/usr/share/wallpapers/Kay/contents/images_dark/1080x1920.png") == "wallpaper:Kay"
    assert scene_key("kphotoalbum", "/usr/share/kphotoalbum/demo/bar55_2.jpg") == scene_key(
        "kphotoalbum", "/usr/share/kphotoalbum/demo/bar55.jpg")
    assert scene_key("g", "/a.rcc:x/erase/resource/giraffe.webp") == scene_key("g", "/b.rcc:y/animals/giraffe.webp")
    assert scene_key("g", "/x/sea1.webp") != scene_key("g", "/x/bee.webp")


def test_connected_groups_are_transitive():
    assert connected_groups(5, [(0, 3), (3, 4)]) == [0, 1, 2, 0, 0]


def test_assign_splits_keeps_groups_whole_and_test_clean():
    keys = [f"pkg:/photos/{i}.jpg" for i in range(400)]
    groups = [i // 3 for i in range(400)]  # groups of three files
    splits = assign_splits(keys, groups)
    assert splits == assign_splits(keys, groups)  # deterministic
    by_group: dict[int, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        by_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    for key, split in zip(keys, splits, strict=True):
        if split == "test":  # every member of a test group passed the old per-file held-out rule
            assert hash_fraction(key) < TEST_FRACTION
    counts = Counter(splits)
    assert counts["val"] >= 0.12 * len(keys) and counts["val"] < 0.12 * len(keys) + 3
    assert counts["test"] > 0 and counts["train"] > counts["val"]


def test_split_corpus_writes_groups_and_no_group_spans_two_splits(tmp_path, photos):
    (tmp_path / "images").mkdir()
    records = []
    for index, (name, image) in enumerate(photos.items()):
        image.save(tmp_path / "images" / f"{name}.png")
        records.append({"file": f"images/{name}.png", "source_package": "pkg", "source_path": f"/p/{name}{index}.jpg"})
    (tmp_path / "manifest.json").write_text(json.dumps(records))
    counts = split_corpus(tmp_path / "manifest.json")
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert sum(counts.values()) == len(photos)
    group = {r["file"]: r["group"] for r in written}
    assert group["images/base.png"] == group["images/portrait.png"] == group["images/rescaled.png"]
    splits_of_group: dict[str, set[str]] = {}
    for record in written:
        splits_of_group.setdefault(record["group"], set()).add(record["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())
    matches = json.loads((tmp_path / "groups.json").read_text())["content_matches"]
    assert {"images/base.png", "images/portrait.png"} in [{m["a"], m["b"]} for m in matches]
