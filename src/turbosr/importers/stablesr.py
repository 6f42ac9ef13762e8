"""``turbosr import stablesr``: StableSR's released models (Wang et al. 2023) as ordinary turbosr model folders.

Inputs a user has on disk (never shipped with turbosr): a diffusers Stable Diffusion 2 folder (SD-2.1-base for
``stablesr_000117.ckpt``, SD-2.1-768 for ``stablesr_768v_000139.ckpt``, SD-Turbo for ``stablesr_turbo.ckpt``),
the StableSR checkpoint (a Lightning ``.ckpt`` with ``state_dict``, or the WebUI extract holding only the SFT and
encoder keys) and, optionally, ``vqgan_cfw_00011.ckpt`` (the CFW autoencoder).

What the folder gets: the UNet (the checkpoint's, converted by diffusers' LDM converter; the SD folder's for an
extract), the 22 SPADE layers and the time-aware encoder (conditioning "sft"), the VAE (the CFW file's with its
fusion layers when given, else the checkpoint's or the SD folder's, CFW off), the empty-prompt embedding computed
once from the SD folder's text encoder (no text encoder at run time), the SD folder's noise schedule and
prediction type, and StableSR's sampler (DDPM on the respaced grid, 200 steps by default, from the LQ latent
noised to t = 999), its tile weights, and CFW weight 0.5.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from turbosr.diffusion import Sampler
from turbosr.importers.ldm_keys import convert_unet, convert_vae, ldm_resnet_sites
from turbosr.importers.safe_load import ImportFailed, file_digest, load_checkpoint, staging_folder, take
from turbosr.importers.sd_folder import (
    load_strict,
    prompt_embedding,
    read_sd_folder,
    released_model_config,
    sd_weights,
)

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
ENCODER_PREFIX = "structcond_stage_model."
VAE_PREFIX = "first_stage_model."
DEFAULT_STEPS = 200  # the reference scripts' --ddpm_steps
DEFAULT_FIDELITY = 0.5  # the reference scripts' --dec_w
ENCODER_HEADS = 4  # num_heads of the released encoder configs (not recoverable from the weights)
LICENCES = {
    "StableSR checkpoints (IceClear/StableSR)": "S-Lab License 1.0: non-commercial use only",
    "Stable Diffusion 2 weights (Stability AI)": "CreativeML Open RAIL++-M",
}


def structure_settings(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The time-aware encoder's settings read off its weights (``structcond_stage_model.*`` keys removed)."""
    model_channels, in_channels = state["input_blocks.0.0.weight"].shape[:2]
    blocks = sorted({int(key.split(".")[1]) for key in state if key.startswith("input_blocks.")})
    levels = len([key for key in state if key.startswith("fea_tran.") and key.endswith("out_layers.3.weight")])
    per_level = len(blocks) // levels  # each level: its ResNets, then (but the last) a downsampler
    num_res_blocks = per_level - 1 if len(blocks) == levels * per_level else -1
    if num_res_blocks < 1:
        raise ImportFailed("the checkpoint's structure encoder has an unexpected block layout")
    mult, attention = [], []
    for level in range(levels):
        first = 1 + level * per_level
        mult.append(int(state[f"input_blocks.{first}.0.in_layers.2.weight"].shape[0]) // int(model_channels))
        if f"input_blocks.{first}.1.qkv.weight" in state:
            attention.append(2**level)
    return {"in_channels": int(in_channels), "model_channels": int(model_channels),
            "out_channels": int(state["fea_tran.0.out_layers.3.weight"].shape[0]), "num_res_blocks": num_res_blocks,
            "attention_resolutions": attention, "channel_mult": mult, "num_heads": ENCODER_HEADS,
            "num_head_channels": -1}


def _convert(fn: Any, state: dict[str, torch.Tensor], config: dict[str, Any], what: str) -> dict[str, torch.Tensor]:
    try:
        return fn(state, config)
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
        raise ImportFailed(f"{what} does not have the Stable Diffusion layout ({type(error).__name__}: "
                           f"{str(error).strip()[:120]})") from None


def build_stablesr(sd: Path, ckpt: Path, cfw: Path | None = None, scale: int = 4) -> Any:
    """The SRPipeline of a StableSR release (see the module docstring); the caller saves it."""
    configs = read_sd_folder(sd)
    state = _state(load_checkpoint(ckpt, "the StableSR checkpoint"), ckpt)
    check_stablesr_keys(state, ckpt)
    cfw_state = _state(load_checkpoint(cfw, "the CFW checkpoint"), cfw) if cfw is not None else None
    pipeline, _ = convert_stablesr(state, configs, cfw_state, prompt_embedding(sd), scale, sd=sd, ckpt=ckpt, cfw=cfw)
    return pipeline


def check_stablesr_keys(state: dict[str, torch.Tensor], ckpt: Path | str) -> None:
    """ImportFailed unless ``state`` has StableSR's SFT layers and structure encoder."""
    if not any(".spade." in key for key in state) or not any(key.startswith(ENCODER_PREFIX) for key in state):
        raise ImportFailed(f"{ckpt} is not a StableSR checkpoint: it has no SFT (.spade.) or structure-encoder "
                           f"({ENCODER_PREFIX}) keys")


def convert_stablesr(state: dict[str, torch.Tensor], configs: dict[str, Any],
                     cfw_state: dict[str, torch.Tensor] | None, prompt: torch.Tensor, scale: int = 4, *,
                     sd: Path | None = None, ckpt: Path | str = "the checkpoint", cfw: Path | str | None = "the CFW file",
                     device: str | None = None) -> tuple[Any, set[str]]:
    """Map a StableSR checkpoint's ``state`` (and a CFW file's) onto turbosr's networks, built from the SD
    folder's ``configs`` (:func:`read_sd_folder`). Returns the pipeline and the checkpoint keys it consumed.
    Every load is strict (each key consumed at its shape, none missing); ``device="meta"`` checks a full-size
    key layout without allocating weights (``sd`` may then be None when the checkpoint has UNet and VAE)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from turbosr.models.autoencoders import KLAutoencoder
    from turbosr.models.denoiser import Denoiser
    from turbosr.pipeline import SRPipeline

    check_stablesr_keys(state, ckpt)
    spade_keys = [key for key in state if ".spade." in key]
    consumed = set(spade_keys)
    with torch.device(device or "cpu"):
        # the UNet: the checkpoint's (StableSR kept SD's UNet frozen and ships it), or the SD folder's (extract)
        unet = UNet2DConditionModel.from_config({k: v for k, v in configs["unet"].items() if not k.startswith("_")})
        context_keys = [key for key in state if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight")]
        if context_keys and state[context_keys[0]].shape[1] != unet.config.cross_attention_dim:
            raise ImportFailed(f"the SD folder does not fit the checkpoint: its UNet reads a "
                               f"{unet.config.cross_attention_dim}-d text context, the checkpoint's "
                               f"{state[context_keys[0]].shape[1]}-d (StableSR is built on SD-2: use the SD-2.1 "
                               "folder it was trained on)")
        bare = {k: v.float() for k, v in state.items() if k.startswith(UNET_PREFIX) and ".spade." not in k}
        consumed |= set(bare)
        if bare:
            load_strict(unet, _convert(convert_unet, bare, dict(unet.config), "the checkpoint's UNet"),
                  f"the checkpoint's UNet ({ckpt})")
        elif sd is not None:
            load_strict(unet, sd_weights(sd, "unet"), f"the SD folder's UNet ({sd})")
        else:
            raise ImportFailed(f"{ckpt} holds no UNet and no SD folder was given")

        # the SFT layers and the structure encoder
        encoder_state = take(state, ENCODER_PREFIX)
        consumed |= {ENCODER_PREFIX + key for key in encoder_state}
        try:
            settings = structure_settings(encoder_state)
        except KeyError as error:
            raise ImportFailed(f"{ckpt}: the structure encoder lacks {error}") from None
        hidden = int(state[spade_keys[0].split(".spade.")[0] + ".spade.mlp_shared.0.weight"].shape[0])
        structure = {"encoder": settings, "hidden": hidden}
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="sft", structure=structure)
        sites = ldm_resnet_sites(unet.config.layers_per_block, len(unet.config.block_out_channels))
        sft_state = {f"encoder.{key}": value for key, value in encoder_state.items()}
        for key in spade_keys:
            site, rest = key[len(UNET_PREFIX):].split(".spade.")
            if site not in sites:
                raise ImportFailed(f"{ckpt}: SFT layer at {site}, which the SD folder's UNet does not have")
            sft_state[f"layers.{sites[site].replace('.', '_')}.{rest}"] = state[key].float()
        assert denoiser.sft is not None
        load_strict(denoiser.sft, sft_state, f"the checkpoint's SFT layers and encoder ({ckpt})")

        # the autoencoder: CFW's (its encoder/decoder are SD's, frozen, plus the fusion layers), or plain
        vae_config = {k: v for k, v in configs["vae"].items() if not k.startswith("_")}
        cfw_levels: list[int] = []
        blocks, growth = 2, 32
        fusion: dict[str, torch.Tensor] = {}
        if cfw_state is not None:
            vae_state = {k: v.float() for k, v in cfw_state.items() if not k.startswith("loss.")}
            fusion = {k: v for k, v in vae_state.items() if k.startswith("decoder.fusion_layer_")}
            if not fusion:
                raise ImportFailed(f"{cfw} is not a CFW autoencoder checkpoint: it has no decoder.fusion_layer_* keys")
            cfw_levels = sorted({int(k.split(".")[1].rsplit("_", 1)[1]) for k in fusion})
            blocks = len({k.split(".")[3] for k in fusion if ".encode_enc_2." in k})
            growth = int(fusion[f"decoder.fusion_layer_{cfw_levels[0]}.encode_enc_2.0.rdb1.conv1.weight"].shape[0])
            vae_state = {k: v for k, v in vae_state.items() if k not in fusion}
            source = f"the CFW checkpoint ({cfw})"
        else:
            vae_state = take(state, VAE_PREFIX)
            consumed |= {VAE_PREFIX + key for key in vae_state}
            source = f"the checkpoint's autoencoder ({ckpt})"
        vae = AutoencoderKL.from_config(vae_config)
        if vae_state:
            load_strict(vae, _convert(convert_vae, vae_state, dict(vae.config), source), source)
        elif sd is not None:
            load_strict(vae, sd_weights(sd, "vae"), f"the SD folder's VAE ({sd})")
        else:
            raise ImportFailed(f"{ckpt} holds no autoencoder and no SD folder was given")
        try:
            autoencoder = KLAutoencoder(vae, float(vae_config.get("scaling_factor", 0.18215)), "sample", cfw_levels,
                                        blocks, growth)
        except ValueError as error:
            raise ImportFailed(f"{cfw}: {error}") from None
        if fusion:
            load_strict(autoencoder.fusions, {k[len("decoder.fusion_layer_"):]: v for k, v in fusion.items()},
                  f"the CFW fusion layers ({cfw}) for this VAE")

    config = released_model_config(configs, unet, scale, "sft")
    pipeline = SRPipeline(denoiser, autoencoder, config, sampler=Sampler(kind="ddpm", start="lq"),
                          default_fidelity=DEFAULT_FIDELITY if cfw_levels else 0.0, default_steps=DEFAULT_STEPS,
                          aggregation="stablesr")
    return pipeline, consumed


def _state(checkpoint: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ImportFailed(f"{path} has no state_dict of tensors")
    return state


def import_stablesr(sd: str | Path, ckpt: str | Path, output: str | Path, cfw: str | Path | None = None,
                    scale: int = 4, storage: str = "float32") -> Path:
    """Convert a StableSR release into the model folder ``output`` (which must not exist; written in a staging
    folder and renamed at the end, so a failed import leaves nothing)."""
    sd, ckpt, output = Path(sd), Path(ckpt), Path(output)
    cfw = Path(cfw) if cfw is not None else None
    if output.exists():
        raise ImportFailed(f"{output} already exists: choose a new output folder (nothing was written)")
    if not 1 <= scale <= 16:
        raise ImportFailed(f"scale must be in [1, 16], got {scale}")
    pipeline = build_stablesr(sd, ckpt, cfw, scale)
    with staging_folder(output) as staging:
        pipeline.save_pretrained(staging, storage=storage, max_shard_bytes=2 << 30)
        _write_card(staging, sd, ckpt, cfw, pipeline)
    return output


def _write_card(folder: Path, sd: Path, ckpt: Path, cfw: Path | None, pipeline: Any) -> None:
    sources = [("StableSR checkpoint", ckpt), *([("CFW autoencoder", cfw)] if cfw is not None else [])]
    lines = ["# StableSR (imported)", "",
             "Converted by `turbosr import stablesr` from files the user supplied; turbosr ships no released weights.",
             "", "## Sources", "", f"- Stable Diffusion folder: `{sd}` (text encoder used once for the empty "
                                   "prompt; UNet/VAE configs)"]
    lines += [f"- {what}: `{path.name}` sha256 `{file_digest(path)}`" for what, path in sources]
    lines += ["", "## Licences", ""] + [f"- {what}: {licence}" for what, licence in LICENCES.items()]
    lines += ["", "## How it runs", "",
              f"- {pipeline.default_steps} DDPM steps by default on StableSR's respaced grid (`--steps k`: "
              "k >= 2), from the LQ latent noised to t = 999; tiles blended with StableSR's Gaussian weights.",
              "- CFW: " + (f"on, `--fidelity` default {pipeline.default_fidelity} (0 = realism, 1 = fidelity)"
                           if pipeline.has_cfw else "off (imported without --cfw): the plain VAE decodes"),
              "- Verified in turbosr by parity with the reference code on random weights in the released layout; "
              "no run with the real weights was made by turbosr's developers.", ""]
    (folder / "README.md").write_text("\n".join(lines))
