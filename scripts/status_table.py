"""The README's status table from the built-in models' cards (``turbosr.weights.status``).

    python scripts/status_table.py            # print the table
    python scripts/status_table.py --write    # replace the block between the markers in README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from turbosr.weights.status import replace_block, table

README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args(argv)
    block = table()
    if not args.write:
        print(block)
        return
    text = README.read_text()
    new = replace_block(text, block)
    if new != text:
        tmp = README.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(README)
    print("README.md status table:", "updated" if new != text else "already current", file=sys.stderr)


if __name__ == "__main__":
    main()
