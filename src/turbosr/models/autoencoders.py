"""Latent spaces behind one interface: ``encode`` / ``decode``, ``factor``, ``latent_channels``.

Images entering ``encode`` and leaving ``decode`` are in the model range [-1, 1] (see ``turbosr.image``).

- :class:`PatchAutoencoder`: an analytic latent space. Each non-overlapping f x f RGB patch is projected on the top
  k principal components of the corpus's patches (an orthonormal linear map), each component divided by its
  standard deviation so latents have unit variance per channel. Decoding is the exact linear inverse on the kept
  subspace plus, optionally, a learned residual: the :class:`~turbosr.models.decoders.LatentDecoder` (reads the
  latent, carries StableSR's CFW) or, in older model folders, a refiner of the decoded RGB. Both start at zero.
- :class:`KLAutoencoder`: the Stable-Diffusion-style learned KL autoencoder (diffusers ``AutoencoderKL``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from turbosr.models.decoders import LatentDecoder, decoder_from_config


def diffusers_config(model: nn.Module) -> dict[str, Any]:
    """A diffusers model's config as a plain JSON-able dict (private ``_`` keys such as the load path dropped)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items() if not k.startswith("_")}


class PatchAutoencoder(nn.Module):
    """Orthonormal patch transform (PCA of f x f x 3 patches) keeping ``latent_channels`` components."""

    kind = "patch"
    cfw_input = "latent"  # a CFW decoder here reads the LQ condition latent

    def __init__(self, factor: int, latent_channels: int, refine_channels: int = 0,
                 decoder: dict[str, Any] | None = None) -> None:
        super().__init__()
        dim = 3 * factor * factor
        if not 1 <= latent_channels <= dim:
            raise ValueError(f"patch autoencoder: latent_channels must be in [1, {dim}] for factor {factor}")
        self.factor = factor
        self.latent_channels = latent_channels
        self.refine_channels = refine_channels
        # basis rows are orthonormal principal directions, ordered (channel, row, column) like a conv weight.
        basis = torch.linalg.qr(torch.randn(dim, latent_channels, generator=torch.Generator().manual_seed(0)))[0].T
        self.register_buffer("basis", basis.contiguous())
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(latent_channels))
        self.refiner: nn.Module | None = None
        if refine_channels > 0:
            last = nn.Conv2d(refine_channels, 3, 3, padding=1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.refiner = nn.Sequential(
                nn.Conv2d(3, refine_channels, 3, padding=1), nn.SiLU(),
                nn.Conv2d(refine_channels, refine_channels, 3, padding=1), nn.SiLU(),
                last,
            )
        self.decoder: LatentDecoder | None = None
        if decoder is not None:
            if refine_channels:
                raise ValueError("a patch autoencoder has either a learned decoder or a refiner, not both")
            self.decoder = decoder_from_config(latent_channels, factor, decoder)

    @property
    def has_cfw(self) -> bool:
        """Whether decoding can take the LQ condition latent and a CFW weight (StableSR)."""
        return self.decoder is not None and self.decoder.has_cfw

    @property
    def decode_radius(self) -> int:
        """Latent pixels of context a decoded pixel depends on beyond its own patch (0: patch-local): the learned
        decoder's receptive radius, or 1 for the RGB refiner (3 convolutions of 3 x 3: 3 pixels < one patch)."""
        if self.decoder is not None:
            return self.decoder.receptive_radius
        return 1 if self.refiner is not None else 0

    def config(self) -> dict[str, Any]:
        config = {"kind": self.kind, "factor": self.factor, "latent_channels": self.latent_channels,
                  "refine_channels": self.refine_channels}
        if self.decoder is not None:
            config["decoder"] = self.decoder.config()
        return config

    def without_refiner(self) -> PatchAutoencoder:
        """A copy with the same latent space and the plain linear decoder (e.g. to undo decoder fine-tuning)."""
        plain = PatchAutoencoder(self.factor, self.latent_channels, 0)
        plain.load_state_dict({k: v for k, v in self.state_dict().items() if k in ("basis", "mean", "std")})
        return plain.to(self.basis.device)

    def without_cfw(self) -> PatchAutoencoder:
        """This latent space with its learned decoder's CFW branch left out (self when there is none)."""
        if not self.has_cfw:
            return self
        assert self.decoder is not None
        bare = PatchAutoencoder(self.factor, self.latent_channels, 0, {**self.decoder.config(), "cfw_channels": []})
        bare.load_state_dict(self.state_dict(), strict=False)
        return bare.to(self.basis.device)

    def with_decoder(self, decoder: dict[str, Any]) -> PatchAutoencoder:
        """A copy with the same latent space and a new learned decoder (zero residual: it decodes as the linear
        inverse until trained). An old refiner is dropped."""
        plain = self.without_refiner()
        learned = PatchAutoencoder(self.factor, self.latent_channels, 0, decoder)
        learned.load_state_dict(plain.state_dict(), strict=False)
        return learned.to(self.basis.device)

    def with_cfw(self, cfw_channels: tuple[int, ...]) -> PatchAutoencoder:
        """A copy whose learned decoder (kept as it is) gets a new, zero-initialised CFW branch."""
        if self.decoder is None or self.has_cfw:
            raise ValueError("with_cfw adds CFW to a learned decoder that has none")
        grown = PatchAutoencoder(self.factor, self.latent_channels, 0,
                                 {**self.decoder.config(), "cfw_channels": list(cfw_channels)})
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(".cfw_" in k or ".fusions." in k for k in missing)
        return grown.to(self.basis.device)

    def _kernel(self) -> torch.Tensor:
        return self.basis.view(self.latent_channels, 3, self.factor, self.factor)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1], H and W multiples of ``factor`` -> (B, k, H/f, W/f), unit variance per channel."""
        kernel = self._kernel().to(images.dtype)
        bias = -(self.basis @ self.mean).to(images.dtype)
        latents = F.conv2d(images, kernel, bias, stride=self.factor)
        return latents / self.std.to(images.dtype).view(1, -1, 1, 1)

    def decode_linear(self, latents: torch.Tensor) -> torch.Tensor:
        """Exact linear inverse on the kept subspace: (B, k, h, w) -> (B, 3, h*f, w*f)."""
        scaled = latents * self.std.to(latents.dtype).view(1, -1, 1, 1)
        images = F.conv_transpose2d(scaled, self._kernel().to(latents.dtype), stride=self.factor)
        mean = self.mean.to(latents.dtype).view(1, 3, self.factor, self.factor)
        return images + mean.repeat(1, 1, latents.shape[-2], latents.shape[-1])

    def decode(self, latents: torch.Tensor, lq_latent: torch.Tensor | None = None, fidelity: float = 0.0
               ) -> torch.Tensor:
        """(B, k, h, w) -> (B, 3, h*f, w*f) in (roughly) [-1, 1]. With a CFW decoder, ``lq_latent`` (the
        condition latent, same shape) and ``fidelity`` w > 0 fuse the LQ image's features in."""
        images = self.decode_linear(latents)
        if self.decoder is not None:
            images = images + self.decoder(latents, lq_latent, fidelity)
        elif self.refiner is not None:
            images = images + self.refiner(images)
        return images

    @torch.no_grad()
    def fit(self, images: torch.Tensor | list[torch.Tensor], max_patches: int = 400_000,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Fit mean, basis and per-component std by PCA of the patches of ``images`` ([-1, 1]).

        Returns the explained-variance fraction per kept component. Patches are subsampled to ``max_patches``.
        """
        batches = images if isinstance(images, list) else [images]
        patches = []
        for batch in batches:
            unfolded = F.unfold(batch.float(), self.factor, stride=self.factor)  # (B, 3f^2, L)
            patches.append(unfolded.permute(0, 2, 1).reshape(-1, unfolded.shape[1]))
        data = torch.cat(patches).double()
        if data.shape[0] > max_patches:
            keep = torch.randperm(data.shape[0], generator=generator)[:max_patches]
            data = data[keep]
        mean = data.mean(0)
        centred = data - mean
        covariance = centred.T @ centred / max(1, data.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = torch.argsort(eigenvalues, descending=True)[: self.latent_channels]
        basis = eigenvectors[:, order].T
        # fix each component's sign so the fit is deterministic (largest-magnitude entry positive)
        signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
        basis = basis * signs
        self.mean.copy_(mean.float())
        self.basis.copy_(basis.float())
        self.std.copy_(eigenvalues[order].clamp_min(1e-12).sqrt().float())
        return (eigenvalues[order] / eigenvalues.sum()).float()


class KLAutoencoder(nn.Module):
    """diffusers ``AutoencoderKL`` behind the turbosr latent interface.

    ``posterior`` "mode" encodes deterministically; "sample" draws ``mean + std * noise`` (the LDM/StableSR
    convention) with the caller's ``noise``. ``cfw_levels`` (LDM level numbers, e.g. [1, 2] for StableSR's
    released CFW autoencoder) adds controllable feature wrapping inside the decoder (:mod:`turbosr.models.kl_cfw`):
    the encoder's features of the LQ image at the end of each such level are fused into the decoder at the same
    level with weight ``fidelity``; decoding then reads the LQ *image* window (``cfw_input`` "image").
    """

    kind = "kl"
    cfw_input = "image"
    decode_radius = 0  # tiles are blended, not cropped: its convolutions reach far (mid-block attention)

    def __init__(self, vae: Any, scaling_factor: float | None = None, posterior: str = "mode",
                 cfw_levels: list[int] | tuple[int, ...] = (), cfw_blocks: int = 2, cfw_growth: int = 32) -> None:
        super().__init__()
        from turbosr.models.kl_cfw import FuseBlock

        if posterior not in ("mode", "sample"):
            raise ValueError(f"autoencoder posterior must be 'mode' or 'sample', got {posterior!r}")
        self.vae = vae
        self.scaling_factor = float(scaling_factor if scaling_factor is not None
                                    else getattr(vae.config, "scaling_factor", 1.0))
        levels = len(vae.config.block_out_channels)
        self.factor = 2 ** (levels - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self.posterior = posterior
        self.cfw_levels = [int(level) for level in cfw_levels]
        if any(not 1 <= level < levels - 1 for level in self.cfw_levels) or len(set(self.cfw_levels)) != len(
                self.cfw_levels):
            raise ValueError(f"cfw_levels must be distinct levels in [1, {levels - 2}], got {list(cfw_levels)}")
        self.cfw_blocks, self.cfw_growth = cfw_blocks, cfw_growth
        self.fusions = nn.ModuleDict({str(level): FuseBlock(vae.config.block_out_channels[level], cfw_blocks,
                                                            cfw_growth) for level in self.cfw_levels})
        self._captured: dict[int, torch.Tensor] | None = None
        self._fuse: tuple[dict[int, torch.Tensor], float] | None = None
        for level in self.cfw_levels:
            vae.encoder.down_blocks[level].resnets[-1].register_forward_hook(self._capture_hook(level))
            vae.decoder.up_blocks[levels - 1 - level].resnets[-1].register_forward_hook(self._fuse_hook(level))

    @property
    def has_cfw(self) -> bool:
        return bool(self.cfw_levels)

    def _capture_hook(self, level: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._captured is not None:
                self._captured[level] = output

        return hook

    def _fuse_hook(self, level: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if self._fuse is None:
                return output
            features, weight = self._fuse
            return output + weight * self.fusions[str(level)](features[level], output)

        return hook

    def config(self) -> dict[str, Any]:
        config = {"kind": self.kind, "scaling_factor": self.scaling_factor, "vae": diffusers_config(self.vae)}
        if self.posterior != "mode":
            config["posterior"] = self.posterior
        if self.cfw_levels:
            config.update(cfw_levels=self.cfw_levels, cfw_blocks=self.cfw_blocks, cfw_growth=self.cfw_growth)
        return config

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> the posterior's mean and std (B, C, H/f, W/f), unscaled."""
        mean, logvar = self.vae.quant_conv(self.vae.encoder(images)).chunk(2, dim=1) \
            if self.vae.quant_conv is not None else self.vae.encoder(images).chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def encode(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latent: the posterior mode, or ``mean + std * noise`` when a posterior
        "sample" autoencoder is given ``noise`` (B, C, H/f, W/f)."""
        mean, std = self.moments(images)
        if noise is not None and self.posterior == "sample":
            return (mean + std * noise.to(mean.dtype)) * self.scaling_factor
        return mean * self.scaling_factor

    def encoder_features(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """The encoder's feature maps at the end of each CFW level (before its downsampler), by level."""
        self._captured = {}
        try:
            down = self.vae.encoder
            hidden = down.conv_in(images)
            for index, block in enumerate(down.down_blocks):  # stop after the deepest level CFW reads
                if index > max(self.cfw_levels):
                    break
                hidden = block(hidden)
            return self._captured
        finally:
            self._captured = None

    def decode(self, latents: torch.Tensor, lq_image: torch.Tensor | None = None, fidelity: float = 0.0
               ) -> torch.Tensor:
        """Scaled latent -> image in [-1, 1]; with CFW, ``lq_image`` (the LQ image at the output size, [-1, 1])
        and ``fidelity`` w > 0 fuse its encoder features in (w = 0 is the plain decoder, exactly)."""
        if fidelity and self.has_cfw:
            if lq_image is None:
                raise ValueError("CFW decoding needs the LQ image")
            self._fuse = (self.encoder_features(lq_image), float(fidelity))
        try:
            return self.vae.decode(latents / self.scaling_factor).sample
        finally:
            self._fuse = None


Autoencoder = PatchAutoencoder | KLAutoencoder


def autoencoder_from_config(config: dict[str, Any]) -> Autoencoder:
    """Rebuild an autoencoder (random/empty weights) from the dict its ``config()`` returned."""
    kind = config.get("kind")
    if kind == "patch":
        return PatchAutoencoder(config["factor"], config["latent_channels"], config.get("refine_channels", 0),
                                config.get("decoder"))
    if kind == "kl":
        from diffusers import AutoencoderKL

        return KLAutoencoder(AutoencoderKL.from_config(config["vae"]), config["scaling_factor"],
                             config.get("posterior", "mode"), config.get("cfw_levels", ()),
                             config.get("cfw_blocks", 2), config.get("cfw_growth", 32))
    raise ValueError(f"unknown autoencoder kind {kind!r} in model config (expected 'patch' or 'kl')")


def load_autoencoder(folder: str | Path) -> Autoencoder:
    """The latent space stored in a model folder (or an autoencoder-only folder with the same two files)."""
    from turbosr import checkpoint

    folder = Path(folder)
    meta = checkpoint.read_json(folder / "config.json")
    if "autoencoder" not in meta:
        raise ValueError(f"{folder}/config.json describes no autoencoder")
    autoencoder = autoencoder_from_config(meta["autoencoder"])
    autoencoder.load_state_dict(checkpoint.load_tensors(folder / "autoencoder.safetensors"), strict=True)
    return autoencoder


def save_autoencoder(folder: str | Path, autoencoder: Autoencoder, extra: dict[str, Any] | None = None) -> Path:
    """Write an autoencoder-only folder (``config.json`` + ``autoencoder.safetensors``), atomically per file."""
    from turbosr import checkpoint

    folder = Path(folder)
    checkpoint.save_tensors(folder / "autoencoder.safetensors",
                            {k: v.float() for k, v in autoencoder.state_dict().items()})
    checkpoint.write_json(folder / "config.json", {"autoencoder": autoencoder.config(), **(extra or {})})
    return folder
