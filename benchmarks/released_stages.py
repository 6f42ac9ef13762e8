"""Where the time goes in one 512² upscale of each released model's shape (full-size RANDOM weights, this CPU).

Stages are timed one by one on the same pipeline as benchmarks/released_models.py builds: the tiled VAE encode
of the upsampled LQ image, one denoiser call (StableSR: structure encoder + SFT UNet; OSEDiff: the UNet; AddSR:
image tower + ControlNet + UNet), its parts where the model has them, and the decode (StableSR: with CFW at 0.5,
i.e. the encoder's features of the LQ image + the decoder with its fusion blocks). Median of ``--repeats``.

    python benchmarks/released_stages.py --families stablesr osediff addsr --dtype float32 \\
        --out docs/benchmarks/released_stages
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = "benchmarks/released_stages.py"

def stages(family: str, dtype: str, repeats: int, threads: int) -> dict[str, float]:
    """Seconds of each stage (median of ``repeats``), measured in this process."""
    import torch

    torch.set_num_threads(threads)
    pipeline = build(family, getattr(torch, dtype))
    lq = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)).to(pipeline.dtype)
    denoiser = pipeline.denoiser
    timings: dict[str, list[float]] = {}

    def timed(name: str, fn) -> object:
        import time

        start = time.perf_counter()
        result = fn()
        timings.setdefault(name, []).append(time.perf_counter() - start)
        return result

    def one_round() -> None:
        latent = timed("VAE encode", lambda: pipeline.encode(lq, seed=0))
        x_t = torch.randn_like(latent)
        if family == "stablesr":
            t = torch.tensor([999])
            timed("structure encoder", lambda: denoiser.sft.encoder(latent, t))
            timed("denoiser call (encoder + SFT UNet)", lambda: denoiser(x_t, latent, 999))
            timed("decode with CFW 0.5 (encoder features + decoder + fusion)",
                  lambda: pipeline.decode(latent, latent, 0.5, lq_image=lq))
            timed("decode without CFW", lambda: pipeline.decode(latent, latent, 0.0, lq_image=lq))
        elif family == "osediff":
            timed("denoiser call (UNet)", lambda: denoiser(latent, latent, 999))
            timed("decode", lambda: pipeline.decode(latent, latent))
        else:
            control = denoiser.released_control
            timed("image tower", lambda: control.tokens(lq, first=False))
            timed("denoiser call (tower + ControlNet + UNet)",
                  lambda: denoiser(x_t, latent, 999, lq, first_step=False))
            timed("decode (also once per PSR step)", lambda: pipeline.decode(latent, latent))

    with torch.inference_mode():
        for _ in range(repeats):
            one_round()
    return {name: statistics.median(values) for name, values in timings.items()}


def build(family: str, dtype):
    """The full-size random-weight pipeline of ``family`` (the same as benchmarks/released_models.py builds)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from turbosr.config import ModelConfig, ScheduleConfig
    from turbosr.diffusion import Sampler
    from turbosr.models.autoencoders import KLAutoencoder
    from turbosr.models.denoiser import Denoiser
    from turbosr.pipeline import SRPipeline

    configs = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "sd21_configs.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({k: v for k, v in configs["unet"].items() if not k.startswith("_")})
    vae = AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
    prompt = torch.randn(1, 77, 1024)
    shape = dict(preset="tiny", latent="kl", latent_factor=8, latent_channels=4, unet="unet2d_condition",
                 unet_channels=(320, 640, 1280, 1280), attention_levels=(True,) * 4, prediction_type="epsilon",
                 target="latent", schedule=ScheduleConfig(zero_terminal_snr=False))
    if family == "stablesr":
        encoder = {"in_channels": 4, "model_channels": 256, "out_channels": 256, "num_res_blocks": 2,
                   "attention_resolutions": [1, 2, 4], "channel_mult": [1, 1, 2, 2], "num_heads": 4,
                   "num_head_channels": -1}
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="sft", structure={"encoder": encoder, "hidden": 128})
        pipeline = SRPipeline(denoiser, KLAutoencoder(vae, 0.18215, "sample", [1, 2]),
                              ModelConfig(**shape, conditioning="sft"), sampler=Sampler(kind="ddpm"),
                              default_fidelity=0.5, aggregation="stablesr")
    elif family == "osediff":
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="direct")
        pipeline = SRPipeline(denoiser, KLAutoencoder(vae, 0.18215, "sample"),
                              ModelConfig(**shape, conditioning="direct"), sampler=Sampler(start="latent"))
    else:  # addsr, seesr: the same networks, sampled as each release's script does (importers/addsr.py)
        from turbosr.importers.addsr import RELEASES
        from turbosr.models.ram_tower import RamTower

        release = RELEASES[family.split("+")[0]]
        controlnet = {k: v for k, v in configs["unet"].items() if k not in (
            "_class_name", "sample_size", "out_channels", "center_input_sample", "up_block_types")}
        negative = torch.randn(1, 77, 1024) if release.negative_prompt else None
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="controlnet", controlnet=controlnet,
                            tower=RamTower(), negative_embedding=negative)
        scheduler = {**configs["scheduler"], "steps_offset": 1, "clip_sample": False}  # SD-2-base's
        pipeline = SRPipeline(denoiser, KLAutoencoder(vae, 0.18215, "sample"),
                              ModelConfig(**shape, conditioning="controlnet"), sampler=release.sampler(scheduler),
                              tagger=random_tagger(release.template) if family.endswith("+tags") else None)
    return pipeline.to(dtype=dtype)


def random_tagger(template: str):
    """RAM's full-size tagging head (4585 classes, 2 layers of 768) and SD-2's text encoder (OpenCLIP-H, 23 layers
    of 1024), random, the text encoder written to a temporary folder with the parity fixture's tokenizer (its ids
    fit the 49408-token vocabulary) and loaded before any timing."""
    import shutil
    import tempfile

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from turbosr.models.ram_tagger import RamTagger, Tagger

    folder = Path(tempfile.mkdtemp(prefix="turbosr-bench-text-"))
    torch.manual_seed(1)
    CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                                 projection_dim=512)).save_pretrained(folder / "text_encoder")
    tokenizer = Path(__file__).resolve().parents[2] / "shared" / "parity" / "stablesr" / "tiny_sd_folder" / "tokenizer"
    shutil.copytree(tokenizer, folder / "tokenizer")
    head = RamTagger(4585)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0, 0.02)
        head.thresholds.fill_(0.68)
    tagger = Tagger(head, [f"tag {i}" for i in range(4585)], template, folder)
    tagger.text_model()
    return tagger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["stablesr", "osediff", "addsr"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one family, in a fresh process
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/released_stages"))
    args = parser.parse_args()
    if args.worker:
        print("RESULT", json.dumps(stages(args.worker, args.dtype, args.repeats, args.threads)))
        return
    import torch

    rows = []
    for family in args.families:
        done = subprocess.run([sys.executable, __file__, "--worker", family, "--dtype", args.dtype, "--repeats",
                               str(args.repeats), "--threads", str(args.threads)], capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"{family} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        for stage, seconds in json.loads(line[0][7:]).items():
            rows.append((family, stage, seconds))
            print(family, stage, f"{seconds:.2f}", flush=True)
    lines = ["# Where the time goes: one 512² upscale of each released shape (random weights)", "",
             f"`python {SCRIPT} --families {' '.join(args.families)} --dtype {args.dtype} --repeats {args.repeats} "
             f"--threads {args.threads}`, {args.threads} threads, torch {torch.__version__}, Python "
             f"{platform.python_version()}; median of {args.repeats}.", "",
             "| model | stage | seconds |", "|---|---|---|"]
    lines += [f"| {family} | {stage} | {seconds:.2f} |" for family, stage, seconds in rows]
    lines += ["", "A k-step run costs about: encode + k denoiser calls + decode (AddSR: + k - 1 PSR decodes and "
              "tower calls). Random weights: cost only.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
