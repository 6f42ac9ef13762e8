"""The documentation's Python examples run: each page's ```python blocks are executed in order, in one
namespace, in a temporary folder (a broken example fails here, not in a user's hands)."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["docs/api.md", "README.md"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_documented_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no python examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page} example {index + 1}", "exec"), namespace)  # noqa: S102
        except Exception as error:
            raise AssertionError(f"{page}, example {index + 1} failed: {error!r}\n{block}") from error
    assert os.listdir(tmp_path)  # the examples wrote their outputs here, not into the repository
