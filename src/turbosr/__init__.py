"""turbosr: fast (one-step) diffusion-based image super-resolution.

Public API: :class:`SRPipeline` (load, move, upscale), :func:`upscale_file` (file to file, streamed when large),
:func:`builtin_model_dir`, model presets and building
(:func:`model_config`, :func:`build_model`), image conversions. ``import turbosr`` imports torch but not
diffusers, accelerate or any optional extra.
"""

from turbosr.image import from_model_range, pil_to_tensor, tensor_to_pil, to_model_range
from turbosr.models import MODEL_PRESETS, build_model, model_config
from turbosr.pipeline import SRPipeline
from turbosr.streaming import upscale_file
from turbosr.weights import builtin_model_dir

__all__ = [
    "MODEL_PRESETS",
    "SRPipeline",
    "build_model",
    "builtin_model_dir",
    "from_model_range",
    "model_config",
    "pil_to_tensor",
    "tensor_to_pil",
    "to_model_range",
    "upscale_file",
]
__version__ = "0.1.0"
