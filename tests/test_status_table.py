"""The README's status table is what turbosr.weights.status generates from the model cards (no typed numbers)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_status_table_is_generated_from_the_cards():
    from turbosr.weights import status as script
    readme = (ROOT / "README.md").read_text()
    assert script.replace_block(readme, script.table()) == readme, \
        "README.md's status table differs from the cards: run `python scripts/status_table.py --write`"


def test_a_cell_shows_each_measured_figure_and_marks_the_missing_ones():
    from turbosr.weights import status as script
    assert script.cell({"psnr_y": 28.666, "grid": 1.14249}) == "28.67 / - / 1.142"
    assert script.cell(None) == "-"
