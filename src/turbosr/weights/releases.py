"""Earlier releases of a built-in model, by digest, from the repository's history.

A built-in's folder (``src/turbosr/weights/NAME``) changes when a better model ships, so a recipe that started
from it names the release it started from by its content digest (``run.start_digests``; the digest of
:func:`turbosr.reports.model_identity`: config.json and the weights). Every release is a commit of this
repository, so a clean clone can write any of them out again: :func:`retrieve_release` walks the commits that
touched the folder, newest first, hashes each version's config and weights exactly as ``folder_digest`` does, and
writes the one that matches (staged, then renamed; an existing output is refused).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from turbosr.reports import MODEL_FILES

WEIGHTS = Path("src/turbosr/weights")


class ReleaseNotFound(ValueError):
    """No commit of the repository holds that release (one line, for the command line)."""


def _git(root: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True).stdout
    except FileNotFoundError:
        raise ReleaseNotFound("git is not installed: earlier releases are read from the repository's history") \
            from None
    except subprocess.CalledProcessError as error:
        raise ReleaseNotFound(f"git {args[0]} failed in {root}: "
                              f"{error.stderr.decode(errors='replace').strip()[:160]}") from None


def repository_root(start: Path | None = None) -> Path:
    """The git checkout turbosr runs from (an installed wheel without history has no earlier releases)."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists() and (folder / WEIGHTS).is_dir():
            return folder
    raise ReleaseNotFound("turbosr is not running from a git checkout: earlier built-in releases are read from the "
                          "repository's history (clone it)")


def release_digests(name: str, root: Path | None = None, stop_at: str | None = None) -> list[tuple[str, str]]:
    """(commit, digest) of every version of built-in ``name`` in the history, newest first (one entry per
    distinct digest); with ``stop_at``, the walk ends at the first version with that digest."""
    root = root or repository_root()
    folder = (WEIGHTS / name).as_posix()
    commits = _git(root, "log", "--format=%H", "--", folder).decode().split()
    if not commits:
        raise ReleaseNotFound(f"no built-in model {name!r} in the repository's history")
    seen: dict[str, str] = {}
    for commit in commits:
        digest = _digest_at(root, commit, folder)
        if digest is not None and digest not in seen:
            seen[digest] = commit
            if digest == stop_at:
                break
    return [(commit, digest) for digest, commit in seen.items()]


def _files_at(root: Path, commit: str, folder: str) -> list[tuple[str, str]]:
    """(path relative to the folder, blob id) of the files of ``folder`` at ``commit``."""
    listing = _git(root, "ls-tree", "-r", commit, "--", folder + "/").decode().splitlines()
    files = []
    for line in listing:
        meta, path = line.split("\t", 1)
        _, kind, blob = meta.split()
        if kind == "blob":
            files.append((path[len(folder) + 1:], blob))
    return sorted(files)


def _digest_at(root: Path, commit: str, folder: str) -> str | None:
    """folder_digest(..., MODEL_FILES) of ``folder`` as it was at ``commit`` (None if it held no model)."""
    files = [(path, blob) for path, blob in _files_at(root, commit, folder)
             if MODEL_FILES(Path(path)) and not Path(path).name.startswith(".")]
    if not files:
        return None
    digest = hashlib.sha256()
    for path, blob in files:
        digest.update(path.encode() + b"\0")
        if blob not in _BLOB_HASHES:  # a blob's bytes never change: most versions share most files
            _BLOB_HASHES[blob] = hashlib.sha256(_git(root, "cat-file", "blob", blob)).digest()
        digest.update(_BLOB_HASHES[blob])
    return digest.hexdigest()[:16]


_BLOB_HASHES: dict[str, bytes] = {}


def retrieve_release(name: str, digest: str, output: str | Path, root: Path | None = None) -> Path:
    """Write the release of built-in ``name`` whose config and weights have ``digest`` into ``output`` (which must
    not exist): every file of the folder at the newest commit holding that release, card included."""
    root = root or repository_root()
    output = Path(output)
    if output.exists():
        raise ReleaseNotFound(f"{output} already exists: choose a new folder (nothing was written)")
    releases = release_digests(name, root, stop_at=digest)
    match = [commit for commit, found in releases if found == digest]
    if not match:
        known = ", ".join(found for _, found in releases[:8])
        raise ReleaseNotFound(f"no release of {name} has weights digest {digest} (newest first: {known})")
    folder = (WEIGHTS / name).as_posix()
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path, blob in _files_at(root, match[0], folder):
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(root, "cat-file", "blob", blob))
    staging.rename(output)
    return output
