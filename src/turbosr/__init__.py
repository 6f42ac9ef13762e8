"""turbosr: fast (one-step) diffusion-based image super-resolution."""

from turbosr.image import pil_to_tensor, tensor_to_pil

__all__ = ["pil_to_tensor", "tensor_to_pil"]
__version__ = "0.1.0"
