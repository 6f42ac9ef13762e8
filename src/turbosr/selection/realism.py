"""Apply the selection rules of docs/realism.md (written before measuring) to the val tables, print the verdicts.

    python scripts/apply_rules.py --bicubic experiments/2026-12-01-default-model/tables/default_rule_val-x4.json \
        --blind experiments/2026-12-01-default-model/tables/default_rule_val-x4-blind.json > experiments/2026-12-01-default-model/tables/default_rule.md

The two JSON files are benchmarks/quality_vs_steps.py outputs on the bicubic and the blind val pairs (one step).
Rules, as written in docs/realism.md:

- x4 (fidelity): artifact figure on bicubic val within 0.03 of HR's; among those the highest bicubic PSNR-Y
  (ties within 0.02 dB: the faster).
- default: bicubic PSNR-Y >= bicubic's + 0.5 dB; artifact figure within 0.03 of HR's on both degradations; among
  those the lowest patch KID on blind val. None passing: x4 stays the default.
- x4-real (realism): the default rule on the blind side: blind PSNR-Y >= bicubic's (blind) + 0.5 dB, blind artifact
  figure within 0.03 of HR's; among those the lowest blind patch KID.

Added 2026-12-03 (tenth session, before any model was measured with it): where the tables measure the lattice
figure (a 2-D pattern the grid figure misses), every artifact clause also needs it at most HR's + 3 dB. Tables
measured before that have no lattice column, and their verdicts are as they were.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

GRID_TOLERANCE = 0.03
LATTICE_MARGIN = 3.0  # dB above the HR images' own lattice figure
PSNR_MARGIN = 0.5
TIE = 0.02
BASELINES = {"bicubic", "lanczos", "realesrgan_x4plus", "realsr_df2k_x4", "span_x4", "dat_light", "HR"}


def rows(paths: list[Path]) -> dict[str, dict]:
    """One-step rows of one or more tables of the same pairs (a model in several: the first file's row)."""
    found: dict[str, dict] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            if row["steps"] in (None, 1):
                found.setdefault(row["model"], row)
    return found


def verdicts(bicubic_rows: dict[str, dict], blind_rows: dict[str, dict], x4_candidates: list[str] | None = None,
             real_candidates: list[str] | None = None) -> tuple[list[str], dict[str, str | None]]:
    """The rule table and the choices. ``x4_candidates`` / ``real_candidates``: the rows competing to be x4 and
    x4-real (default: every non-baseline row for both); the default is chosen among the chosen x4 and the x4-real
    candidates (the models that would ship)."""
    hr_clean, hr_blind = bicubic_rows["HR"]["grid"], blind_rows["HR"]["grid"]
    floor_clean = bicubic_rows["bicubic"]["psnr_y"] + PSNR_MARGIN
    floor_blind = blind_rows["bicubic"]["psnr_y"] + PSNR_MARGIN
    lattice = "lattice" in bicubic_rows["HR"] and "lattice" in blind_rows["HR"]  # measured: the 2-D clause applies
    candidates = [name for name in bicubic_rows if name not in BASELINES and name in blind_rows]
    own = (f" lattice dB bicubic / blind (HR {bicubic_rows['HR']['lattice']:.2f} / {blind_rows['HR']['lattice']:.2f}) |"
           if lattice else "")
    artifacts = "grid and lattice" if lattice else "grid"
    lines = [f"| candidate | bicubic val PSNR-Y | grid (HR {hr_clean:.3f}) | blind val PSNR-Y | grid (HR {hr_blind:.3f}) |{own} blind patch KID x1000 |"
             f" NIQE (blind, reported only) | {artifacts} ok, bicubic | {artifacts} ok, blind | PSNR ok, bicubic (>= {floor_clean:.2f}) |"
             f" PSNR ok, blind (>= {floor_blind:.2f}) |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if lattice else "")]

    def clean_of_artifacts(row: dict, hr: dict) -> bool:
        return abs(row["grid"] - hr["grid"]) <= GRID_TOLERANCE and (
            not lattice or row["lattice"] <= hr["lattice"] + LATTICE_MARGIN)

    checks = {}
    for name in candidates + ["bicubic", "realesrgan_x4plus"]:
        clean, blind = bicubic_rows.get(name), blind_rows.get(name)
        if clean is None or blind is None:
            continue
        ok = {"grid_clean": clean_of_artifacts(clean, bicubic_rows["HR"]),
              "grid_blind": clean_of_artifacts(blind, blind_rows["HR"]),
              "psnr_clean": clean["psnr_y"] >= floor_clean, "psnr_blind": blind["psnr_y"] >= floor_blind}
        if name in candidates:
            checks[name] = ok
        mark = {True: "yes", False: "**no**"}
        lines.append(f"| {name} | {clean['psnr_y']:.3f} | {clean['grid']:.3f} | {blind['psnr_y']:.3f} | "
                     f"{blind['grid']:.3f} | "
                     + (f"{clean['lattice']:.2f} / {blind['lattice']:.2f} | " if lattice else "")
                     + f"{blind['patch_kid']:.1f} | {blind['niqe']:.2f} | "
                     + " | ".join(mark[ok[k]] if name in candidates else "-" for k in
                                  ("grid_clean", "grid_blind", "psnr_clean", "psnr_blind")) + " |")

    def best(names: list[str], key, lowest: bool) -> str | None:
        if not names:
            return None
        return sorted(names, key=key, reverse=not lowest)[0]

    x4_pool = [n for n in x4_candidates or candidates if checks[n]["grid_clean"]]
    x4 = best(x4_pool, lambda n: bicubic_rows[n]["psnr_y"], lowest=False)
    if x4 is not None:  # ties within TIE dB go to the faster model
        tied = [n for n in x4_pool if bicubic_rows[x4]["psnr_y"] - bicubic_rows[n]["psnr_y"] <= TIE]
        x4 = min(tied, key=lambda n: bicubic_rows[n]["seconds"])
    real_names = real_candidates or candidates
    shipping = [n for n in candidates if n == x4 or n in real_names]
    default_pool = [n for n in shipping if checks[n]["psnr_clean"] and checks[n]["grid_clean"]
                    and checks[n]["grid_blind"]]
    real_pool = [n for n in real_names if checks[n]["psnr_blind"] and checks[n]["grid_blind"]]
    choice = {"x4": x4,
              "default": best(default_pool, lambda n: blind_rows[n]["patch_kid"], lowest=True),
              "x4-real": best(real_pool, lambda n: blind_rows[n]["patch_kid"], lowest=True)}
    return lines, choice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bicubic", type=Path, nargs="+", required=True, help="tables of the bicubic val pairs")
    parser.add_argument("--blind", type=Path, nargs="+", required=True, help="tables of the blind val pairs")
    parser.add_argument("--x4", nargs="+", default=None, metavar="ROW", help="the x4 candidates (default: all)")
    parser.add_argument("--x4-real", nargs="+", default=None, metavar="ROW", help="the x4-real candidates (default: all)")
    args = parser.parse_args(argv)
    lines, choice = verdicts(rows(args.bicubic), rows(args.blind), args.x4, args.x4_real)
    print("# The selection rules of docs/realism.md applied to the val split (one step)\n")
    print(f"Generated by `python scripts/apply_rules.py {shlex.join(argv if argv is not None else sys.argv[1:])}`"
          " from the tables")
    tables = ", ".join(f"[{p.stem}]({p.stem}.md)" for p in [*args.bicubic, *args.blind])
    print(f"{tables} (commands there). The rules were written before these were measured.\n")
    print("\n".join(lines))
    print()
    if "lattice" in rows(args.bicubic)["HR"]:
        print(f"- Artifact clauses: grid within {GRID_TOLERANCE} of HR's and lattice at most HR's + {LATTICE_MARGIN:g} dB.")
    print(f"- **x4** (grid within {GRID_TOLERANCE} of HR on bicubic val, then highest PSNR-Y): "
          f"{choice['x4'] or 'none passes'}")
    print(f"- **x4-real** (blind PSNR-Y at least bicubic + {PSNR_MARGIN} dB, blind grid within {GRID_TOLERANCE},"
          f" then lowest blind patch KID): {choice['x4-real'] or 'none passes'}")
    if args.x4 or args.x4_real:
        print(f"- x4 candidates: {', '.join(args.x4 or ['all'])}; x4-real candidates: {', '.join(args.x4_real or ['all'])};"
              " the default is chosen among the chosen x4 and the x4-real candidates.")
    print(f"- **default** (bicubic PSNR-Y at least bicubic + {PSNR_MARGIN} dB, grid within {GRID_TOLERANCE} on both,"
          f" then lowest blind patch KID): {choice['default'] or 'none passes: x4 stays the default'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
