"""Image-quality metrics and folder evaluation.

- :mod:`turbosr.metrics.pixel`: PSNR / SSIM maths (BasicSR / MATLAB conventions);
- :mod:`turbosr.metrics.table`: the name -> metric tables (``METRICS``, ``FOLDER_METRICS``);
- :mod:`turbosr.metrics.folders`: scoring folders and upscalers;
- ``niqe``, ``fid``, ``lpips``, ``dists``: the individual perceptual metrics (imported when used).

Report files are written by :mod:`turbosr.reports`.
"""

from turbosr.metrics.folders import evaluate_folders, evaluate_upscaler, match_files, summarise
from turbosr.metrics.pixel import psnr, quantize, rgb_to_y, ssim
from turbosr.metrics.table import FOLDER_METRICS, METRICS, Metric, get_metrics

__all__ = ["FOLDER_METRICS", "METRICS", "Metric", "evaluate_folders", "evaluate_upscaler", "get_metrics",
           "match_files", "psnr", "quantize", "rgb_to_y", "ssim", "summarise"]
