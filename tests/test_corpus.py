import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from turbosr.corpus import RccError, average_hash, list_samples, photo_score, read_rcc, sample_path


def write_rcc(files: dict[str, bytes], version: int, compress: set[str] = frozenset()) -> bytes:
    """A minimal Qt .rcc writer (independent of the reader): root dir, nested dirs, plain/zlib files."""
    tree: dict = {}
    for path, data in files.items():
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = data
    names = bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    data_section = bytearray()
    entries: list[tuple] = []  # (name, is_dir, payload or children)
    queue = [("", tree)]
    entries.append(None)  # root placeholder
    layout = []
    # breadth-first numbering: children of a directory are contiguous
    index_of_dir = {id(tree): 0}
    while queue:
        name, node = queue.pop(0)
        first = len(entries)
        for child in sorted(node):
            entries.append((child, node[child]))
        layout.append((id(node), first, len(node)))
        for child in sorted(node):
            if isinstance(node[child], dict):
                index_of_dir[id(node[child])] = entries.index((child, node[child]))
                queue.append((child, node[child]))
    children = {key: (first, count) for key, first, count in layout}
    entry_size = 14 if version == 1 else 22
    records = bytearray()
    for index, entry in enumerate(entries):
        if index == 0:
            first, count = children[id(tree)]
            records += struct.pack(">IHII", name_offset(""), 2, count, first)
        else:
            child, value = entry
            if isinstance(value, dict):
                first, count = children[id(value)]
                records += struct.pack(">IHII", name_offset(child), 2, count, first)
            else:
                path_flags = 1 if child in compress else 0
                payload = struct.pack(">I", len(value)) + zlib.compress(value) if path_flags else value
                offset = len(data_section)
                data_section += struct.pack(">I", len(payload)) + payload
                records += struct.pack(">IHHHI", name_offset(child), path_flags, 0, 0, offset)
        if version >= 2:
            records += struct.pack(">Q", 0)
    assert len(records) == entry_size * len(entries)
    header_size = 20 if version < 3 else 24
    data_offset = header_size
    names_offset = data_offset + len(data_section)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data_section) + bytes(names) + bytes(records)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reader_on_an_archive_written_here(version):
    files = {"a.txt": b"plain text", "photos/big.webp": b"x" * 500 + b"tail", "photos/deep/c.png": b"\x89PNG.."}
    archive = write_rcc(files, version, compress={"big.webp"})
    assert read_rcc(archive) == files


def test_rcc_rejects_other_files():
    with pytest.raises(RccError, match="qres"):
        read_rcc(b"PK\x03\x04 a zip file, not a resource bundle")
    with pytest.raises(RccError, match="version"):
        read_rcc(b"qres" + struct.pack(">IIII", 9, 0, 0, 0))


def test_photo_filter_drops_graphics_and_keeps_photo_like_images():
    flat = Image.new("RGB", (600, 600), (30, 120, 200))
    keep, reason = photo_score(flat)
    assert not keep and "colours" in reason
    rng = np.random.default_rng(0)
    base = Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).resize((600, 600), Image.BICUBIC)
    photo = np.asarray(base, dtype=np.float64) + rng.normal(0, 6, (600, 600, 3))
    keep, reason = photo_score(Image.fromarray(photo.clip(0, 255).astype(np.uint8)))
    assert keep, reason


def test_average_hash_finds_near_duplicates():
    rng = np.random.default_rng(1)
    image = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((256, 256), Image.BICUBIC)
    brighter = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + 8, 0, 255).astype(np.uint8))
    other = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((256, 256), Image.BICUBIC)
    assert bin(average_hash(image) ^ average_hash(brighter)).count("1") <= 3
    assert bin(average_hash(image) ^ average_hash(other)).count("1") > 10


def test_bundled_samples_are_the_licensed_photos_their_notice_lists():
    """Every bundled sample is listed, with its size, in samples/LICENSES.md (source and licence), and only
    those; an unknown name is a one-line error naming the available ones."""
    import re

    notice = (sample_path("astronaut").parent / "LICENSES.md").read_text()
    listed = {name: (int(w), int(h)) for name, w, h in re.findall(r"^\| (\w+)\.png \((\d+)x(\d+)\)", notice, re.M)}
    assert set(list_samples()) == set(listed) and {"astronaut", "coffee", "chelsea"} <= set(listed)
    for name, size in listed.items():
        image = Image.open(sample_path(name))
        assert image.size == size and image.mode == "RGB", name
    with pytest.raises(FileNotFoundError, match="available: astronaut, chelsea, coffee"):
        sample_path("nope")
