"""Noise-schedule maths as small pure functions.

Notation (DDPM/DDIM): ``alpha_bar[t]`` is the cumulative product of (1 - beta); a clean sample ``x0`` is noised as
``x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps`` (Ho et al. 2020, eq. 4). The network predicts one of
``epsilon``, ``v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0`` (Salimans & Ho 2022, sec. 4) or ``sample`` (x0).
With the zero-terminal-SNR schedule (Lin et al. 2023, Alg. 1) ``alpha_bar[T-1] = 0``: the last timestep is pure
noise, which is what one-step SR starts from (YONOS-SR: a single DDIM step from the last timestep).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from turbosr.config import ScheduleConfig

PREDICTION_TYPES = ("epsilon", "v", "sample")


def make_betas(schedule: ScheduleConfig) -> torch.Tensor:
    """Betas (T,) in float64 for the configured schedule, rescaled to zero terminal SNR if asked."""
    steps = schedule.num_train_timesteps
    if schedule.beta_schedule == "scaled_linear":
        betas = torch.linspace(schedule.beta_start**0.5, schedule.beta_end**0.5, steps, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(schedule.beta_start, schedule.beta_end, steps, dtype=torch.float64)
    if schedule.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the first value is kept and the last is exactly 0 (Lin et al. 2023, Alg. 1)."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def make_alpha_bar(schedule: ScheduleConfig) -> torch.Tensor:
    """Cumulative alpha products (T,) as float32, in [0, 1], decreasing."""
    return torch.cumprod(1.0 - make_betas(schedule), dim=0).float()


def _gather(alpha_bar: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar[t]) and sqrt(1 - alpha_bar[t]) shaped (B, 1, 1, 1) to broadcast over ``like``."""
    a = alpha_bar.to(like.device)[t.to(like.device).long()].to(like.dtype)
    a = a.reshape(-1, *([1] * (like.dim() - 1)))
    return a.sqrt(), (1.0 - a).clamp_min(0).sqrt()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x0): sqrt(ab) x0 + sqrt(1-ab) eps. ``t`` is (B,) integer timesteps."""
    signal, sigma = _gather(alpha_bar, t, x0)
    return signal * x0 + sigma * noise


def sample_training_timesteps(batch: int, num_train_timesteps: int, terminal_fraction: float = 0.0,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) int64 training timesteps: uniform over [0, T) (Ho et al. 2020, Alg. 1), except that a
    ``terminal_fraction`` of them are T - 1, where one-step sampling starts (with zero terminal SNR the input
    there is pure noise, so those samples train the one-step regression directly). 0 draws nothing extra.
    """
    t = torch.randint(num_train_timesteps, (batch,), generator=generator)
    if terminal_fraction > 0:
        terminal = torch.rand(batch, generator=generator) < terminal_fraction
        t = torch.where(terminal, num_train_timesteps - 1, t)
    return t


def training_target(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the network should output for (x0, noise, t) under ``prediction_type``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v":
        signal, sigma = _gather(alpha_bar, t, x0)
        return signal * noise - sigma * x0
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def predict_x0_eps(
    model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a network output at (x_t, t) into the implied clean sample x0 and noise eps."""
    signal, sigma = _gather(alpha_bar, t, x_t)
    if prediction_type == "v":
        x0 = signal * x_t - sigma * model_output
        eps = sigma * x_t + signal * model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (x_t - signal * x0) / sigma.clamp_min(1e-8)
    elif prediction_type == "epsilon":
        eps = model_output
        x0 = (x_t - sigma * eps) / signal.clamp_min(1e-8)
    else:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return x0, eps


def output_from_x0_eps(
    x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Inverse of :func:`predict_x0_eps`: the network output that implies (x0, eps) at timestep t."""
    return training_target(x0, eps, t, alpha_bar, prediction_type)


def sampling_timesteps(num_steps: int, num_train_timesteps: int, strength: float = 1.0) -> list[int]:
    """Descending timesteps for a k-step sampler with "trailing" spacing (Lin et al. 2023, sec. 3.4).

    ``strength`` in (0, 1] sets the starting timestep: 1.0 starts from the last timestep (pure noise under
    zero terminal SNR); smaller values start from a partly noised initial estimate (more fidelity to the input).
    One step at strength 1 is ``[T - 1]``.
    """
    if num_steps < 1:
        raise ValueError(f"the number of steps must be >= 1, got {num_steps}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    start = max(1, round(num_train_timesteps * strength))
    num_steps = min(num_steps, start)
    stride = start / num_steps
    return [int(round(start - i * stride)) - 1 for i in range(num_steps)]


def ddim_step(
    x0: torch.Tensor, eps: torch.Tensor, t_prev: int, alpha_bar: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM update (Song et al. 2021, eq. 12 with eta = 0) to timestep ``t_prev``."""
    t = torch.full((x0.shape[0],), t_prev, device=x0.device, dtype=torch.long)
    return add_noise(x0, eps, t, alpha_bar)


DenoiseFn = Callable[[torch.Tensor, int], torch.Tensor]


def sample(
    denoise: DenoiseFn,
    noise: torch.Tensor,
    timesteps: list[int],
    alpha_bar: torch.Tensor,
    prediction_type: str,
    initial_x0: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """k-step DDIM sampling, returning the final x0 estimate.

    ``denoise(x_t, t)`` returns the network output for integer timestep ``t``. The start ``x_T`` is
    ``noise`` itself when the first timestep has zero signal, else ``initial_x0`` noised to that timestep
    (``initial_x0`` defaults to zeros: for the residual target that is the bicubic anchor).
    """
    first = timesteps[0]
    t_batch = torch.full((noise.shape[0],), first, device=noise.device, dtype=torch.long)
    start = torch.zeros_like(noise) if initial_x0 is None else initial_x0
    x_t = add_noise(start, noise, t_batch, alpha_bar)
    x0 = start
    for index, t in enumerate(timesteps):
        t_batch = torch.full((noise.shape[0],), t, device=noise.device, dtype=torch.long)
        output = denoise(x_t, t)
        x0, eps = predict_x0_eps(output, x_t, t_batch, alpha_bar, prediction_type)
        if index + 1 < len(timesteps):
            x_t = ddim_step(x0, eps, timesteps[index + 1], alpha_bar)
        if on_step is not None:
            on_step(index)
    return x0


RenoiseDenoiseFn = Callable[[torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]


def sample_renoise(
    denoise: RenoiseDenoiseFn,
    fresh_noise: Callable[[], torch.Tensor],
    timesteps: list[int],
    alpha_bar: torch.Tensor,
    prediction_type: str,
    initial_x0: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Few-step sampling of adversarially distilled models (ADD, Sauer et al. 2023, sec. 3; AddSR): each step
    predicts x0, and the next step starts from that x0 noised again to its timestep with *fresh* noise (not
    DDIM's reuse of the predicted noise). ``denoise(x_t, t, previous_x0)`` gets the previous step's x0 (None at
    the first step) so it can condition on it (AddSR's prediction-based self-refinement).
    """
    first = torch.full((1,), timesteps[0], dtype=torch.long)
    noise = fresh_noise()
    start = torch.zeros_like(noise) if initial_x0 is None else initial_x0
    x_t = add_noise(start, noise, first.expand(noise.shape[0]).to(noise.device), alpha_bar)
    previous = None
    for index, t in enumerate(timesteps):
        t_batch = torch.full((noise.shape[0],), t, device=noise.device, dtype=torch.long)
        output = denoise(x_t, t, previous)
        previous, _ = predict_x0_eps(output, x_t, t_batch, alpha_bar, prediction_type)
        if index + 1 < len(timesteps):
            next_t = torch.full((noise.shape[0],), timesteps[index + 1], device=noise.device, dtype=torch.long)
            x_t = add_noise(previous, fresh_noise(), next_t, alpha_bar)
        if on_step is not None:
            on_step(index)
    return previous
