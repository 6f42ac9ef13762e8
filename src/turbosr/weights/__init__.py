"""The built-in models (small, trained by this project on CPU; see each folder's README.md model card)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def builtin_model_dir(scale: int = 4) -> Path:
    """Folder of the built-in x``scale`` model; a clear error when none is installed for that scale."""
    folder = WEIGHTS_DIR / f"x{scale}"
    if not (folder / "config.json").is_file():
        available = sorted(p.name for p in WEIGHTS_DIR.glob("x*") if (p / "config.json").is_file())
        have = f"installed: {', '.join(available)}" if available else "none is installed yet"
        raise FileNotFoundError(f"no built-in x{scale} model ({have}); pass --model DIR with a trained model folder")
    return folder
