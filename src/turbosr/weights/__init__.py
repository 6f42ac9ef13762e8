"""The built-in models (small, trained by this project on CPU; see each folder's README.md model card)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent

# The default built-in model of each scale. x4 (clean or bicubic-style inputs) is the x4 default: it beats bicubic
# on clean photos, where x4-real falls below it and prints the patch latent's 8-px pattern (2026-12-01). Another
# model becomes the default only by the rule in docs/realism.md ("The default rule"), measured on val.
DEFAULT_BUILTINS = {4: "x4"}

# What each built-in model is for, one line (the demo's menu, `turbosr upscale --help`).
MODEL_PURPOSES = {
    "x4": "clean or bicubic-downscaled photos (the x4 default); --fidelity 1 (default) faithful, 0 sharper with grain",
    "x4-real": "photos with noise, blur or JPEG artefacts: removes them, smooth output (not for clean photos)",
}


def installed_builtins() -> list[str]:
    """Names of the installed built-in models (x4, x4-real, ...)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    # a hidden folder is a packaging run's staging area (left behind if that run was killed), never a model
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def builtin_model_dir(name: int | str = 4) -> Path:
    """Folder of a built-in model, by scale (the default model for that scale: DEFAULT_BUILTINS, else "x{scale}")
    or by name ("x4", "x4-real"); a clear error when none is installed under that name."""
    key = DEFAULT_BUILTINS.get(name, f"x{name}") if isinstance(name, int) else name
    folder = WEIGHTS_DIR / key
    if not (folder / "config.json").is_file():
        available = installed_builtins()
        have = f"installed: {', '.join(available)}" if available else "none is installed yet"
        raise FileNotFoundError(f"no built-in {key} model ({have}); pass --model DIR with a trained model folder")
    return folder


def resolve_model(name_or_folder: str) -> Path:
    """A --model argument: a built-in model's name, or a model folder."""
    if name_or_folder in installed_builtins():
        return builtin_model_dir(name_or_folder)
    return Path(name_or_folder)
