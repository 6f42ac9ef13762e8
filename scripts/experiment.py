"""Rerun an experiment of the lab notebook: its arms (recipe overlays) and the val tables that decided, from what
its folder records (turbosr.experiments).

    python scripts/experiment.py experiments/2026-12-03-x4-realism-end --dry-run
    python scripts/experiment.py experiments/2026-12-03-x4-realism-end --steps tables
"""

from __future__ import annotations

import argparse
import sys

from turbosr.experiments import STEPS, plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an experiment folder (experiments/<date>-<question>)")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS, help="which parts to rerun")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    try:
        commands = plan(args.folder, tuple(args.steps))
    except ValueError as error:
        print(f"experiment: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(f"[{step.part}] {step}" for step in commands))
        return 0
    return run(commands)


if __name__ == "__main__":
    sys.exit(main())
