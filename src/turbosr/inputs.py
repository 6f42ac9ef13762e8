"""Finding the image files a run reads: folders walked once (links followed, loops ended), glob patterns with
their fixed leading folder, the run's own output folder left out, and the names outputs get from their sources.
(What a file holds is :mod:`turbosr.image`'s business.)"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from turbosr.image_files import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file below ``folder`` once, sorted per folder; symlinked folders are followed but no folder is entered
    twice (a link to an ancestor, ``loop -> .``, ends there), and a file reached by several paths (links) is
    given once, by the first path."""
    seen_folders: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def visit(current: Path) -> Iterator[Path]:
        try:
            info = current.stat()
        except OSError:
            return
        if (info.st_dev, info.st_ino) in seen_folders:
            return
        seen_folders.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(current.iterdir())
        except OSError:
            return
        for entry in entries:
            try:
                entry_info = entry.stat()
            except OSError:  # a dangling link
                continue
            if stat.S_ISDIR(entry_info.st_mode):
                yield from visit(entry)
            elif stat.S_ISREG(entry_info.st_mode) and (entry_info.st_dev, entry_info.st_ino) not in seen_files:
                seen_files.add((entry_info.st_dev, entry_info.st_ino))
                yield entry

    yield from visit(folder)


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive, each real file once, no link loop followed, sorted by path), or a
    clear error for a missing/empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in walk_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def glob_root(pattern: str) -> Path:
    """The fixed leading folder of a glob pattern (``shots/**/*.jpg`` -> ``shots``; ``*.png`` -> ``.``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for the part of a glob pattern below :func:`glob_root`, matched against '/'-joined relative
    paths: ``**`` as a whole component spans any number of folders (none included), ``*`` and ``?`` stay inside
    one component, ``[...]`` is a character class; as in the shell, a wildcard does not match a leading dot."""
    parts = Path(pattern).parts[len(glob_root(pattern).parts):]
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += r"(?:[^/.][^/]*/)*" if not last else r"(?:[^/.][^/]*/)*[^/.][^/]*"
            continue
        piece, i = "" if part.startswith(".") else r"(?!\.)", 0
        while i < len(part):
            ch = part[i]
            if ch == "*":
                piece += "[^/]*"
            elif ch == "?":
                piece += "[^/]"
            elif ch == "[" and "]" in part[i + 1:]:
                end = part.index("]", i + 1)
                body = part[i + 1:end]
                piece += "[" + ("^" + re.escape(body[1:]) if body.startswith(("!", "^")) else re.escape(body)) + "]"
                i = end
            else:
                piece += re.escape(ch)
            i += 1
        regex += piece + ("" if last else "/")
    return re.compile(regex + r"\Z")


class FoundImages(NamedTuple):
    """What :func:`find_images` found: sorted (path, relative path) pairs; how many image files it left out
    because they lie inside the ``skip`` folder; and the files of formats turbosr does not read that folders and
    patterns held (UNSUPPORTED_SUFFIXES: reported, not read)."""

    items: list[tuple[Path, Path]]
    skipped: int
    unsupported: list[Path]


def png_names(sources: Sequence[Path]) -> dict[str, Path]:
    """{``STEM.png``: source} for outputs named after their sources; ValueError (one line, before anything is
    written) when two sources would share a name (``a.jpg`` and ``a.png``)."""
    names: dict[str, Path] = {}
    for path in sources:
        name = f"{Path(path).stem}.png"
        if name in names:
            raise ValueError(f"{names[name]} and {path} would both become {name}: rename one (nothing was written)")
        names[name] = Path(path)
    return names


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def find_images(inputs: Sequence[str | Path], skip: Path | None = None) -> FoundImages:
    """Expand files, folders (recursively) and glob patterns into sorted, unique (path, relative path) pairs.

    The relative path keeps the tree below a folder, or below a glob pattern's fixed leading folder
    (``shots/**/*.jpg``: ``shots/a/x.jpg`` -> ``a/x.jpg``). Each real file is taken once (links to one file, or
    link loops, give it once); folders and patterns never look inside ``skip`` (the run's output folder: its
    files are counted in ``skipped``, so a rerun does not feed its own outputs back in). An input matching
    nothing raises FileNotFoundError.
    """
    found: dict[Path, Path] = {}
    real: set[Path] = set()
    skipped = 0
    unsupported: list[Path] = []
    skip_resolved = skip.resolve() if skip is not None else None

    def inside_skip(file: Path) -> bool:
        return skip_resolved is not None and skip_resolved in file.resolve().parents

    def add(file: Path, relative: Path) -> None:
        key = file.resolve()
        if key not in real:
            real.add(key)
            found[file] = relative

    for item in inputs:
        text = str(item)
        path = Path(text)
        if any(ch in text for ch in "*?[") and not path.exists():  # an existing literal name is not a pattern
            root = glob_root(text)
            matcher = glob_regex(text)
            listed = [f for f in walk_files(root) if matcher.match(f.relative_to(root).as_posix())] \
                if root.is_dir() else []
            empty: Exception = FileNotFoundError(f"{text}: no image files match this pattern")
        elif path.is_dir():
            if skip_resolved is not None and path.resolve() == skip_resolved:
                raise ValueError(f"{text} is the output folder itself: choose another output (-o)")
            root, listed = path, list(walk_files(path))
            empty = ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        elif path.is_file():
            add(path, Path(path.name))
            continue
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
        everything = [f for f in listed if f.suffix.lower() in IMAGE_SUFFIXES]
        unsupported += [f for f in listed if f.suffix.lower() in UNSUPPORTED_SUFFIXES and not inside_skip(f)]
        files = [f for f in everything if not inside_skip(f)]
        skipped += len(everything) - len(files)
        if not files:
            raise type(empty)(f"{empty}{' outside the output folder' if everything else ''}")
        for file in files:
            add(file, file.relative_to(root))
    return FoundImages(sorted(found.items()), skipped, sorted(set(unsupported)))
