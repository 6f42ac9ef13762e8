"""Training recipes, one readable file per method; ``METHODS`` maps each CLI name to its config and loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

METHOD_NAMES = ("autoencoder", "teacher", "scale-distill", "decoder", "one-step", "adversarial-distill", "stablesr")  # the keys of methods(), for the CLI


def methods() -> dict[str, tuple[type, Callable[[Any], Path]]]:
    """{CLI name: (config dataclass, train function)}; imported on demand (they pull in accelerate/diffusers)."""
    from turbosr.train import (
        adversarial_distill,
        autoencoder,
        decoder,
        one_step,
        scale_distill,
        stablesr,
        teacher,
    )

    return {
        "autoencoder": (autoencoder.AutoencoderConfig, autoencoder.train),
        "teacher": (teacher.TeacherConfig, teacher.train),
        "scale-distill": (scale_distill.ScaleDistillConfig, scale_distill.train),
        "decoder": (decoder.DecoderConfig, decoder.train),
        "one-step": (one_step.OneStepConfig, one_step.train),
        "adversarial-distill": (adversarial_distill.AdversarialDistillConfig, adversarial_distill.train),
        "stablesr": (stablesr.StableSRConfig, stablesr.train),
    }


def resolved_recipe(recipe: str) -> dict[str, Any]:
    """A recipe's resolved config as a run records it (its checkpoint's run_config.json), for run.start_recipes."""
    from turbosr.config import ConfigError, load_config, recipe_method, to_dict

    method = recipe_method(recipe)
    if method not in methods():
        raise ConfigError(f"{recipe} names no training method (method: {method!r})")
    return to_dict(load_config(methods()[method][0], recipe, method=method))
