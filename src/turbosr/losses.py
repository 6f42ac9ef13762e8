"""Loss formulas as small pure functions (shapes (B, C, H, W); reductions documented per function)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from turbosr.run_config import ImageLossConfig


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between network output and its diffusion target (Ho et al. 2020, eq. 14), a scalar."""
    return F.mse_loss(prediction.float(), target.float())


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, a scalar."""
    return (prediction.float() - target.float()).abs().mean()


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - mean SSIM (Wang et al. 2004, eq. 13) on [0, 1] images, Gaussian window, differentiable; a scalar."""
    x, y = prediction.float(), target.float()
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma, x)
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(image, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return 1.0 - ssim.mean()


def edge_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient images: penalises blurred or misplaced edges more than plain L1; a scalar."""
    x, y = prediction.float(), target.float()
    channels = x.shape[1]
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device) / 4
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1).repeat(channels, 1, 1, 1)
    return (F.conv2d(x, kernels, groups=channels) - F.conv2d(y, kernels, groups=channels)).abs().mean()


def frequency_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between 2-D FFT amplitude spectra (orthonormal): rewards restoring high-frequency energy; a scalar."""
    spectrum_x = torch.fft.rfft2(prediction.float(), norm="ortho").abs()
    spectrum_y = torch.fft.rfft2(target.float(), norm="ortho").abs()
    return (spectrum_x - spectrum_y).abs().mean()


def phase_profile(images: torch.Tensor, period: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2, period): mean |horizontal| and |vertical| gradient of the channel mean on the pixel
    columns / rows of each phase of ``period`` (the quantity of the periodic-artifact figure, metrics/artifacts.py)."""
    grey = images.float().mean(dim=1)
    width, height = (grey.shape[-1] - 1) // period * period, (grey.shape[-2] - 1) // period * period
    horizontal = (grey[..., :, 1:width + 1] - grey[..., :, :width]).abs().mean(dim=-2)
    vertical = (grey[..., 1:height + 1, :] - grey[..., :height, :]).abs().mean(dim=-1)
    return torch.stack([horizontal.reshape(len(grey), -1, period).mean(1),
                        vertical.reshape(len(grey), -1, period).mean(1)], dim=1)


def grid_loss(prediction: torch.Tensor, target: torch.Tensor, period: int = 8) -> torch.Tensor:
    """L1 between the phase profiles of prediction and target, each divided by its own mean over the phases: zero
    when no pixel phase of the period carries a larger share of the gradient than in the target, so it punishes
    a latent grid or block pattern and not how much texture or noise there is overall; a scalar."""
    def shape(images: torch.Tensor) -> torch.Tensor:
        profile = phase_profile(images, period)
        return profile / profile.mean(dim=-1, keepdim=True).clamp_min(1e-6)

    return (shape(prediction) - shape(target)).abs().mean()


def lattice_loss(prediction: torch.Tensor, target: torch.Tensor, period: int = 8) -> torch.Tensor:
    """How far each prediction's power on the period's 2-D lattice frequencies (where a pattern stamped on every
    latent patch puts its energy, in any orientation; metrics/artifacts.py) rises above its target's power at the
    same frequencies: log power ratio where positive, the 3 largest of each image averaged, then the batch. Zero
    for the target and for anything with no more power there than the photo; a diagonal hatch of 2 grey levels on
    128-px crops scores several times what noise of the same strength does. Absolute, not relative to the
    neighbouring frequencies, so adding broadband noise cannot hide a peak from it; a scalar."""
    from turbosr.metrics.artifacts import lattice_power, on_lattice
    from turbosr.metrics.pixel import rgb_to_y

    def log_power(images: torch.Tensor) -> torch.Tensor:
        return on_lattice(lattice_power(rgb_to_y(images.float())[:, 0] * 255, period), period).clamp_min(1e-6).log()

    return F.relu(log_power(prediction) - log_power(target)).topk(3, dim=1).values.mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator (Lim & Ye 2017): mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN loss: -mean(D(fake))."""
    return -fake_logits.float().mean()


# AddSR's timestep-adaptive distillation weights (Xie et al. 2024, arXiv 2404.01717, sec. 3.3), indexed by the
# step k = 1..4 of the 4-step schedule (t = 999, 749, 499, 249). The paper's form is exponential, 0.5 * 2.1^(k-1);
# an earlier version of the paper used a linear ramp. (The released code at HEAD, 8721d93, uses the same
# exponential; only its first upload, 1ee0800, had 0.85, 1, 1.2, 1.4.)
ADAPTIVE_WEIGHT_FORMS = {
    "exponential": (0.5, 1.05, 2.205, 4.6305),
    "linear": (0.7, 0.9, 1.1, 1.3),
    "fixed": (1.0, 1.0, 1.0, 1.0),  # the ablation: no timestep adaptation
}


def timestep_adaptive_weight(step_index: torch.Tensor, form: str = "exponential") -> torch.Tensor:
    """Distillation-loss weight for 0-based schedule step ``step_index`` (B,) (0 = the pure-noise step).

    Small at the first, noisiest step and large at the last: early steps must invent detail (the fixed
    adversarial term dominates), late steps refine what is there (distillation dominates). Which index a
    training sample gets is the caller's choice (see ``adaptive_indexing`` in train/adversarial_distill.py).
    """
    if form not in ADAPTIVE_WEIGHT_FORMS:
        raise ValueError(f"unknown weighting form {form!r}; choose one of {', '.join(ADAPTIVE_WEIGHT_FORMS)}")
    table = torch.tensor(ADAPTIVE_WEIGHT_FORMS[form], device=step_index.device)
    return table[step_index.clamp(0, len(table) - 1).long()]


def image_loss(prediction: torch.Tensor, target: torch.Tensor, weights: ImageLossConfig) -> dict[str, torch.Tensor]:
    """Weighted pixel + perceptual-style terms on [0, 1] images; returns each weighted term and their ``total``.

    Always computed in float32 with autocast disabled: SSIM's variance terms (E[x^2] - E[x]^2) cancel
    catastrophically in bfloat16, and the resulting gradient noise biased decoder fine-tuning towards darker
    colours (measured: -3 dB PSNR on held-out crops before this was fixed).
    """
    terms: dict[str, torch.Tensor] = {}
    prediction, target = prediction.float(), target.float()
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        for name, function in IMAGE_LOSSES.items():
            weight = getattr(weights, name)
            if weight > 0:
                terms[name] = weight * (function(prediction, target, weights.grid_period)
                                        if name in ("grid", "lattice") else function(prediction, target))
    terms["total"] = sum(terms.values(), torch.zeros((), device=prediction.device))
    return terms


IMAGE_LOSSES = {"l1": l1_loss, "ssim": ssim_loss, "edge": edge_loss, "frequency": frequency_loss, "grid": grid_loss,
                "lattice": lattice_loss}
