"""The documentation's Python examples run: each page's ```python blocks are executed in order, in one
namespace, in a temporary folder (a broken example fails here, not in a user's hands). The bundled samples
they open are swapped for copies shrunk to SAMPLE_SIDE pixels, so every call runs as written at a fraction of
the CPU time (the full-size photos made this the suite's slowest test)."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["docs/api.md", "README.md"]
SAMPLE_SIDE = 128  # the longer side of the shrunk samples


def shrunk_samples(folder: Path):
    """A stand-in for ``turbosr.corpus.sample_path``: the same sample, its longer side SAMPLE_SIDE px."""
    from PIL import Image

    from turbosr import corpus

    original = corpus.sample_path

    def sample_path(name: str = "astronaut") -> Path:
        path = folder / f"{name}.png"
        if not path.is_file():
            image = Image.open(original(name))
            ratio = SAMPLE_SIDE / max(image.size)
            image.resize((round(image.width * ratio), round(image.height * ratio)), Image.Resampling.LANCZOS).save(path)
        return path

    return sample_path


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_documented_examples_run(page, tmp_path, tmp_path_factory, monkeypatch):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no python examples"
    monkeypatch.chdir(tmp_path)
    # outside tmp_path, so that the last assert still sees only what the examples wrote
    samples = tmp_path_factory.mktemp("samples")
    monkeypatch.setattr("turbosr.corpus.sample_path", shrunk_samples(samples))
    namespace: dict = {}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page} example {index + 1}", "exec"), namespace)  # noqa: S102
        except Exception as error:
            raise AssertionError(f"{page}, example {index + 1} failed: {error!r}\n{block}") from error
    assert os.listdir(tmp_path)  # the examples wrote their outputs here, not into the repository
    # every image they wrote is an upscale of a bundled sample by a model's factor (what the examples promise)
    from PIL import Image

    inputs = {Image.open(path).size for path in samples.glob("*.png")}
    written = [p for p in tmp_path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".webp", ".tif", ".tiff")
               and p.parent.name not in ("hr", "hq", "lq")]  # the evaluation example's pair set (sample crops)
    assert written, f"{page}'s examples wrote no image"
    for path in written:
        size = Image.open(path).size
        assert any(size == (w * k, h * k) for w, h in inputs for k in (2, 4, 8)), f"{path.name}: {size}"


def test_every_benchmark_table_is_linked_from_its_readme():
    import re

    root = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
    linked = set(re.findall(r"\]\(([^)]+\.md)\)", (root / "README.md").read_text()))
    tables = {p.relative_to(root).as_posix() for p in root.rglob("*.md") if p.name != "README.md"}
    assert tables - linked == set(), f"tables not linked from docs/benchmarks/README.md: {sorted(tables - linked)}"


def test_every_experiment_table_is_linked_from_its_folder_readme():
    """Selection tables live with their experiment (experiments/*/tables/), each linked from the folder's README."""
    tables = sorted((ROOT / "experiments").glob("*/tables/*.md"))
    assert tables
    for table in tables:
        readme = (table.parent.parent / "README.md").read_text()
        assert f"tables/{table.name}" in readme, f"{table} is not linked from {table.parent.parent.name}/README.md"
    assert not [p.name for p in (ROOT / "docs" / "benchmarks").glob("*_val*.md") if p.stem != "validation_size"], \
        "val-split selection tables belong to their experiment, not docs/benchmarks/"


def test_relative_links_of_the_docs_and_the_notebook_resolve():
    """Every relative Markdown link in README.md, docs/ and experiments/ points at a file that exists (tables and
    recipes move: a stale link fails here)."""
    import re

    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "docs" / "benchmarks" / "README.md",
             *(ROOT / "experiments").rglob("*.md")]
    broken = []
    for page in pages:
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not link.startswith(("http:", "https:", "mailto:")) and not (page.parent / link).exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert not broken, broken
