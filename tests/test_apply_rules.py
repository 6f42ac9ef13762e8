"""turbosr.selection applies docs/realism.md's selection rules as written (synthetic val rows)."""

from __future__ import annotations

import contextlib
import io
import json


def row(psnr, grid, kid=50.0, niqe=9.0, seconds=0.1):
    return {"psnr_y": psnr, "grid": grid, "patch_kid": kid, "niqe": niqe, "seconds": seconds}


def test_rules_pick_by_the_written_criteria():
    from turbosr.selection import realism as script
    clean = {"HR": {"grid": 1.05}, "bicubic": row(31.0, 1.16), "realesrgan_x4plus": row(29.4, 1.06),
             "sharp but gridded": row(32.5, 1.10),          # best PSNR, grid 0.05 above HR: not x4
             "faithful": row(32.2, 1.06, seconds=0.2),
             "faithful, faster": row(32.19, 1.04, seconds=0.1),  # within 0.02 dB: the faster wins
             "realistic": row(30.0, 1.07)}                  # below bicubic + 0.5 on clean inputs
    blind = {"HR": {"grid": 1.04}, "bicubic": row(27.0, 1.14, kid=115), "realesrgan_x4plus": row(26.5, 1.07, kid=10),
             "sharp but gridded": row(27.6, 1.12, kid=40), "faithful": row(27.8, 1.05, kid=45),
             "faithful, faster": row(27.7, 1.06, kid=44), "realistic": row(27.6, 1.05, kid=20)}
    _, choice = script.verdicts(clean, blind)
    assert choice["x4"] == "faithful, faster"
    assert choice["x4-real"] == "realistic"  # lowest blind KID among blind PSNR >= 27.5 and blind grid ok
    assert choice["default"] == "faithful, faster"  # "realistic" fails the clean PSNR floor
    # the default is chosen among the models that would ship: the chosen x4 and the x4-real candidates
    _, choice = script.verdicts(clean, blind, x4_candidates=["faithful", "sharp but gridded"],
                                real_candidates=["realistic"])
    assert choice == {"x4": "faithful", "x4-real": "realistic", "default": "faithful"}


def test_no_candidate_passing_leaves_none():
    from turbosr.selection import realism as script
    clean = {"HR": {"grid": 1.0}, "bicubic": row(31.0, 1.2), "m": row(30.0, 1.2)}
    blind = {"HR": {"grid": 1.0}, "bicubic": row(27.0, 1.2), "m": row(26.0, 1.2)}
    assert script.verdicts(clean, blind)[1] == {"x4": None, "default": None, "x4-real": None}


def test_a_lattice_above_hrs_rules_a_candidate_out_where_measured():
    from turbosr.selection import realism as script

    def with_lattice(table: dict, values: dict) -> dict:
        return {name: {**r, "lattice": values.get(name, 5.0)} for name, r in table.items()}

    clean = {"HR": {"grid": 1.05}, "bicubic": row(31.0, 1.16), "hatched": row(32.5, 1.05), "plain": row(32.2, 1.05)}
    blind = {"HR": {"grid": 1.04}, "bicubic": row(27.0, 1.14, kid=115), "hatched": row(27.8, 1.04, kid=20),
             "plain": row(27.7, 1.04, kid=30)}
    assert script.verdicts(clean, blind)[1] == {"x4": "hatched", "default": "hatched", "x4-real": "hatched"}
    # the hatch: 3.5 dB above HR's lattice figure on blind val only (bicubic val within the margin)
    lines, choice = script.verdicts(with_lattice(clean, {"hatched": 7.9}), with_lattice(blind, {"hatched": 8.5}))
    assert choice == {"x4": "hatched", "default": "plain", "x4-real": "plain"}
    assert any("lattice" in line for line in lines[:1])


def test_knob_rule_needs_the_lattice_figure_at_both_ends(monkeypatch):
    from turbosr.selection import knob as script

    def end(psnr, kid, lattice=None):
        return {"psnr_y": psnr, "grid": 1.05, "hr_grid": 1.05, "patch_kid": kid,
                **({"lattice": lattice, "hr_lattice": 5.0} if lattice is not None else {})}

    assert script.verdict(end(31.5, 24.0, 6.0), end(32.5, 25.0, 5.0), shipped_psnr=32.5) == []
    hatched = script.verdict(end(31.5, 24.0, 8.5), end(32.5, 25.0, 5.0), shipped_psnr=32.5)
    assert hatched == ["w=0 lattice 8.50 dB vs HR 5.00"]
    assert script.verdict(end(31.5, 24.0), end(32.5, 25.0), shipped_psnr=32.5) == [
        "w=1 lattice not measured", "w=0 lattice not measured"]


def test_knob_rule_matches_the_shipped_model_at_its_default_weight(monkeypatch, tmp_path):
    """The sixth built-in runs at w = 1 by default: a candidate's w = 1 is held to that output, not its w = 0."""
    from turbosr.selection import knob as script

    def table(path, psnr0, psnr1, kid0, kid1):
        rows = [{"pairs": "val", "w": w, "psnr_y": p, "grid": 1.05, "hr_grid": 1.05, "lattice": 4.0,
                 "hr_lattice": 3.0, "patch_kid": k, "niqe": 5.0} for w, p, k in ((0.0, psnr0, kid0), (1.0, psnr1, kid1))]
        path.write_text(json.dumps({"rows": rows}))
        return str(path)

    shipped = table(tmp_path / "shipped.json", 32.0, 32.5, 30.0, 29.0)
    candidate = table(tmp_path / "candidate.json", 31.9, 32.3, 25.0, 26.0)  # w = 1 0.2 dB under the shipped default
    verdicts = {}
    for default in ("0", "1"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            script.main(["--shipped", shipped, "--shipped-default", default, "--candidate", f"c={candidate}"])
        verdicts[default] = [line for line in out.getvalue().splitlines() if line.startswith("| c |")][0]
    assert verdicts["0"].endswith("passes |")  # against w = 0's 32.0
    assert "w=1 PSNR-Y 32.300 < 32.450" in verdicts["1"]  # against the default w = 1's 32.5
