"""Noise-schedule maths as small pure functions.

Notation (DDPM/DDIM): ``alpha_bar[t]`` is the cumulative product of (1 - beta); a clean sample ``x0`` is noised as
``x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps`` (Ho et al. 2020, eq. 4). The network predicts one of
``epsilon``, ``v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0`` (Salimans & Ho 2022, sec. 4) or ``sample`` (x0).
With the zero-terminal-SNR schedule (Lin et al. 2023, Alg. 1) ``alpha_bar[T-1] = 0``: the last timestep is pure
noise, which is what one-step SR starts from (YONOS-SR: a single DDIM step from the last timestep).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from turbosr.config import ConfigError, ScheduleConfig

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


def check_sampling(num_steps: int, strength: float) -> None:
    """The one check of a sampling run's options (ValueError with the fix): at least one step, strength in (0, 1]."""
    if num_steps < 1:
        raise ValueError(f"the number of steps must be >= 1, got {num_steps}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")


def sampling_timesteps(num_steps: int, num_train_timesteps: int, strength: float = 1.0) -> list[int]:
    """Descending timesteps for a k-step sampler with "trailing" spacing (Lin et al. 2023, sec. 3.4).

    ``strength`` in (0, 1] sets the starting timestep: 1.0 starts from the last timestep (pure noise under
    zero terminal SNR); smaller values start from a partly noised initial estimate (more fidelity to the input).
    One step at strength 1 is ``[T - 1]``.
    """
    check_sampling(num_steps, strength)
    start = max(1, round(num_train_timesteps * strength))
    num_steps = min(num_steps, start)
    stride = start / num_steps
    return [int(round(start - i * stride)) - 1 for i in range(num_steps)]


# ---------------------------------------------------------------------------------------------------- sampling
NOISE_BLOCK = 64  # latent pixels per side of one block of position-keyed noise


def keyed_noise(seed: int, step: int, shape: tuple[int, int, int, int], rows: tuple[int, int] | None = None,
                cols: tuple[int, int] | None = None) -> torch.Tensor:
    """Standard Gaussian noise for the window ``rows`` x ``cols`` of a (B, C, H, W) latent, float32 on the CPU,
    as a pure function of (seed, step, sample, position): the latent is cut into NOISE_BLOCK-square blocks,
    each drawn from its own generator. Any window (a tile, a strip, the whole latent) gets the same values where
    windows overlap, so tiled, streamed and whole-image sampling start from the same noise."""
    batch, channels, height, width = shape
    y0, y1 = rows or (0, height)
    x0, x1 = cols or (0, width)
    out = torch.empty(batch, channels, y1 - y0, x1 - x0)
    for by in range(y0 // NOISE_BLOCK, (y1 - 1) // NOISE_BLOCK + 1):
        for bx in range(x0 // NOISE_BLOCK, (x1 - 1) // NOISE_BLOCK + 1):
            top, left = by * NOISE_BLOCK, bx * NOISE_BLOCK
            ys, ye = max(y0, top), min(y1, top + NOISE_BLOCK)
            xs, xe = max(x0, left), min(x1, left + NOISE_BLOCK)
            for sample in range(batch):
                key = (((seed * 1_000_003 + step) * 1_009 + sample) * 100_003 + by) * 100_019 + bx
                block = torch.randn(channels, NOISE_BLOCK, NOISE_BLOCK,
                                    generator=torch.Generator().manual_seed(key % 2**63))
                out[sample, :, ys - y0:ye - y0, xs - x0:xe - x0] = block[:, ys - top:ye - top, xs - left:xe - left]
    return out


def noise_seed(generator: torch.Generator | None = None) -> int:
    """The seed of a sampling run's keyed noise: one draw from ``generator`` (or torch's global RNG)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(2**62, (1,), generator=generator, device=device))


def leading_timesteps(num_train_timesteps: int, num_steps: int, offset: int = 0) -> list[int]:
    """Descending timesteps of diffusers' "leading" spacing (the Stable Diffusion schedulers' default, which
    SeeSR's DDPM run uses): multiples of T // k from 0, plus the scheduler's ``steps_offset`` (981, 961, ..., 1 for
    k = 50 and offset 1). The step after each is ``t - T // k`` (1.0 for alpha_bar below 0)."""
    stride = num_train_timesteps // num_steps
    return [i * stride + offset for i in reversed(range(num_steps))]


def space_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """Descending timesteps of an evenly spaced k-step grid that includes 0 and T - 1 (Nichol & Dhariwal 2021,
    "respacing"; StableSR's ``space_timesteps(1000, [k])``: 999/666/333/0 for k = 4). One step is [0]."""
    stride = (num_train_timesteps - 1) / (num_steps - 1) if num_steps > 1 else 1
    return sorted({round(i * stride) for i in range(num_steps)}, reverse=True)


# ---------------------------------------------------------------------------------------------- update rules
# One step of a sampler after the network: from (x_t at t, the network's x0 and eps) to x at the next timestep
# t_next (-1 after the last step, where every rule returns x0). ``noise`` is fresh N(0, 1) for rules that draw.

def ddim_update(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: int, t_next: int,
                alpha_bar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12, eta = 0): x0 noised to t_next with the predicted eps."""
    return x0 if t_next < 0 else add_noise(x0, eps, _at(t_next, x0), alpha_bar)


def renoise_update(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: int, t_next: int,
                   alpha_bar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Adversarially distilled models (ADD, Sauer et al. 2023, sec. 3; AddSR): x0 noised to t_next with fresh noise."""
    if t_next < 0:
        return x0
    assert noise is not None
    return add_noise(x0, noise, _at(t_next, x0), alpha_bar)


def ddpm_posterior(ab_t: float, ab_next: float) -> tuple[float, float, float]:
    """(coef_x0, coef_xt, std) of the DDPM posterior q(x_next | x_t, x0) between two timesteps of a respaced grid
    (Ho et al. 2020, eqs. 6-7, with the grid's beta' = 1 - ab_t / ab_next; Nichol & Dhariwal 2021, sec. 4).
    ab_next = 1 after the last step gives (1, 0, 0); the log-variance is clipped at 1e-20 as in the reference."""
    beta = 1.0 - ab_t / ab_next
    coef_x0 = beta * ab_next**0.5 / (1.0 - ab_t)
    coef_xt = (1.0 - ab_next) * (1.0 - beta) ** 0.5 / (1.0 - ab_t)
    variance = beta * (1.0 - ab_next) / (1.0 - ab_t)
    return coef_x0, coef_xt, max(variance, 1e-20) ** 0.5


def ddpm_update(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: int, t_next: int,
                alpha_bar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Ancestral DDPM step on a respaced grid (StableSR's sampler): the posterior mean plus its std times noise;
    no noise after the last step."""
    ab_t = float(alpha_bar[t])
    ab_next = float(alpha_bar[t_next]) if t_next >= 0 else 1.0  # diffusers' DDPMScheduler: "one" below t = 0
    coef_x0, coef_xt, std = ddpm_posterior(ab_t, ab_next)
    x_next = coef_x0 * x0 + coef_xt * x_t
    if t_next < 0:
        return x_next
    assert noise is not None
    return x_next + std * noise.to(x_next.dtype)


def _at(t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0],), t, device=like.device, dtype=torch.long)


UpdateRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int, torch.Tensor, "torch.Tensor | None"],
                      torch.Tensor]
UPDATE_RULES: dict[str, UpdateRule] = {"ddim": ddim_update, "renoise": renoise_update, "ddpm": ddpm_update}
DRAWS_NOISE = {"ddim": False, "renoise": True, "ddpm": True}
SAMPLERS = tuple(UPDATE_RULES)
STARTS = ("lq", "noise", "latent")
# timestep grids: "" = the rule's own (trailing for ddim and renoise, even respacing for ddpm), "leading" =
# diffusers' leading spacing plus the scheduler's steps_offset (:func:`leading_timesteps`)
SPACINGS = ("", "leading")

# A window is an index into a whole latent (B, C, H, W): ``latent[window]`` is its part. WHOLE is the whole latent.
Window = tuple[object, ...]
WHOLE: Window = (...,)
# denoise(x_t, t, previous_x0, window) -> network output at integer timestep t for that window of the latent;
# previous_x0 is the renoise rule's last x0 estimate there (None at the first step and for the other rules), for
# AddSR's prediction-based self-refinement
DenoiseFn = Callable[[torch.Tensor, int, "torch.Tensor | None", Window], torch.Tensor]
# join(fn) calls fn(window) for each window of the latent and blends the results into one whole latent
# (aggregation sampling over tiles, StableSR sec. 3.4); WHOLE alone when sampling is not tiled
JoinFn = Callable[[Callable[[Window], torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Sampler:
    """k-step sampling, one short loop over the update rules above (:data:`UPDATE_RULES`):

    - ``ddim``: deterministic DDIM, trailing spacing (Lin et al. 2023);
    - ``renoise``: adversarially distilled models (AddSR). With ``trained_steps`` K > 0 (the student's training
      grid, trailing spacing of K steps) k <= K steps walk the first k timesteps of that grid, the transitions it
      was trained on; ``psr_weight`` is AddSR's self-refinement blend (used by the model's denoise function), in
      the latent (turbosr's recipe) or, ``psr_space`` "pixel", on the decoded image (AddSR's released pipeline);
    - ``ddpm``: ancestral DDPM on the evenly respaced grid (:func:`space_timesteps`), StableSR's sampler; the
      networks see the original timesteps.

    ``start`` "lq" starts from the initial estimate (the LQ latent, or zero for a residual target) noised to the
    first timestep (or to ``start_timestep`` if >= 0: SeeSR noises the LQ latent to 999 and then runs its grid
    from 981); "noise" from pure N(0, 1) (StableSR's 512 script); "latent" from the initial estimate itself,
    no noise (OSEDiff: one step at t = T - 1 on the LQ latent). ``spacing`` "leading" replaces the rule's own grid
    with diffusers' leading one shifted by ``steps_offset`` (SeeSR's DDPM). ``guidance`` > 1 is classifier-free
    guidance (Ho & Salimans 2022): the networks also run on the model's negative prompt and the output is
    ``uncond + guidance * (cond - uncond)`` (SeeSR: 5.5). ``allowed_steps`` (empty: any) are the step counts
    the model supports; others are refused in one line. ``num_steps`` k and ``strength`` (the
    starting noise level, 1 = the last timestep) are the caller's. A model folder stores its sampler beside the
    network's shape (config.json "sampler"; :meth:`to_dict` / :meth:`from_dict`).
    """

    kind: str = "ddim"
    psr_weight: float = 0.5
    trained_steps: int = 0
    start: str = "lq"
    allowed_steps: tuple[int, ...] = ()
    psr_space: str = "latent"
    spacing: str = ""
    steps_offset: int = 0
    start_timestep: int = -1
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.kind!r}")
        if self.psr_space not in ("latent", "pixel"):
            raise ConfigError(f"sampler psr_space must be 'latent' or 'pixel', got {self.psr_space!r}")
        if self.start not in STARTS:
            raise ConfigError(f"sampler start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if isinstance(self.psr_weight, bool) or not isinstance(self.psr_weight, int | float) \
                or not 0.0 <= self.psr_weight <= 1.0:
            raise ConfigError(f"sampler psr_weight must be a number in [0, 1], got {self.psr_weight!r}")
        if isinstance(self.trained_steps, bool) or not isinstance(self.trained_steps, int) \
                or not 0 <= self.trained_steps <= 1000:
            raise ConfigError(f"sampler trained_steps must be an integer in [0, 1000], got {self.trained_steps!r}")
        if not isinstance(self.allowed_steps, tuple | list) or not all(
                isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 1000 for k in self.allowed_steps):
            raise ConfigError(f"sampler allowed_steps must be step counts in [1, 1000], got {self.allowed_steps!r}")
        object.__setattr__(self, "allowed_steps", tuple(self.allowed_steps))
        if self.spacing not in SPACINGS:
            raise ConfigError(f"sampler spacing must be one of {', '.join(map(repr, SPACINGS))}, got {self.spacing!r}")
        for name, low in (("steps_offset", 0), ("start_timestep", -1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 1000:
                raise ConfigError(f"sampler {name} must be an integer in [{low}, 1000), got {value!r}")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, int | float) \
                or not 1.0 <= self.guidance <= 50.0:
            raise ConfigError(f"sampler guidance must be a number in [1, 50] (1 = no guidance), got {self.guidance!r}")

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "psr_weight": self.psr_weight,
                                   "trained_steps": self.trained_steps}
        defaults = Sampler()
        for name in ("start", "allowed_steps", "psr_space", "spacing", "steps_offset", "start_timestep", "guidance"):
            value = getattr(self, name)
            if value != getattr(defaults, name):  # the other fields are written only where they differ
                data[name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: object) -> Sampler:
        """From config.json's "sampler" mapping; unknown keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"sampler must be a mapping, got {data!r}")
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown sampler key(s) {', '.join(map(str, unknown))}")
        return cls(**data)

    def check(self, num_steps: int, strength: float) -> None:
        """ValueError (one line) for a step count or strength this rule cannot run."""
        check_sampling(num_steps, strength)
        if self.allowed_steps and num_steps not in self.allowed_steps:
            counts = ", ".join(map(str, self.allowed_steps))
            raise ValueError(f"this model supports --steps {counts} only (it was trained for those), got {num_steps}")
        if self.start == "latent" and strength != 1.0:
            raise ValueError(f"this model starts from the LQ latent itself: strength does not apply (got {strength})")
        if self.spacing and strength != 1.0:
            raise ValueError(f"this model samples on its scheduler's full grid: strength does not apply (got {strength})")
        if self.kind == "ddpm" and not self.spacing and (num_steps < 2 or strength != 1.0):
            raise ValueError(f"this model samples with DDPM on an evenly spaced grid from t = 999 to 0: it needs "
                             f"at least 2 steps and strength 1 (got {num_steps} steps, strength {strength})")

    def timesteps(self, num_steps: int, num_train_timesteps: int, strength: float = 1.0) -> list[int]:
        """Descending timesteps of a k-step run (see :func:`sampling_timesteps`; renoise: the trained grid;
        ddpm: :func:`space_timesteps`)."""
        self.check(num_steps, strength)
        if self.spacing == "leading":
            return leading_timesteps(num_train_timesteps, num_steps, self.steps_offset)
        if self.kind == "ddpm":
            return space_timesteps(num_train_timesteps, num_steps)
        if self.kind == "renoise" and self.trained_steps and strength == 1.0 and num_steps <= self.trained_steps:
            return sampling_timesteps(self.trained_steps, num_train_timesteps)[:num_steps]
        return sampling_timesteps(num_steps, num_train_timesteps, strength)

    def sample(self, denoise: DenoiseFn, noise: Callable[[int, Window], torch.Tensor],
               initial_x0: Callable[[Window], torch.Tensor], timesteps: list[int], alpha_bar: torch.Tensor,
               prediction_type: str, on_step: Callable[[int], None] | None = None, *, join: JoinFn | None = None,
               finish: Callable[[torch.Tensor, Window], torch.Tensor] | None = None) -> torch.Tensor:
        """The final x0 estimate, passed through ``finish(x0, window)`` if given (e.g. x0 -> HQ latent).

        ``noise(i, window)`` is the i-th Gaussian draw on that window: 0 for the start, i + 1 for what the rule
        draws after step i. ``initial_x0(window)`` is the estimate that step 0 noises to the first timestep
        (start "lq"). Everything a step does after the network (x0/eps, the update rule, ``finish``) is per
        pixel, so each window runs its whole step and ``join`` blends only the results (for the linear rules
        here that equals blending the network outputs): a run holds the whole x_t from step 2 on (and the previous
        x0 for the renoise rule), never the noise, the network output or eps whole. With one window this is
        exactly the whole-latent computation."""
        join = join or (lambda fn: fn(WHOLE))
        update = UPDATE_RULES[self.kind]
        x_t: torch.Tensor | None = None
        previous: torch.Tensor | None = None
        result: torch.Tensor | None = None
        for index, t in enumerate(timesteps):
            last = index + 1 == len(timesteps)
            t_next = -1 if last else timesteps[index + 1]
            keep_x0 = self.kind == "renoise" and not last  # PSR reads the previous x0 at the next step

            def advance(window: Window, index: int = index, t: int = t, t_next: int = t_next, last: bool = last,
                        keep_x0: bool = keep_x0, x_t: torch.Tensor | None = x_t,
                        previous: torch.Tensor | None = previous) -> torch.Tensor:
                if x_t is not None:
                    current = x_t[window]
                elif self.start == "noise":
                    current = noise(0, window)
                elif self.start == "latent":
                    current = initial_x0(window)
                else:  # step 0: the initial estimate noised to the first timestep (or to start_timestep)
                    start = initial_x0(window)
                    level = t if self.start_timestep < 0 else self.start_timestep
                    current = add_noise(start, noise(0, window), _at(level, start), alpha_bar)
                output = denoise(current, t, None if previous is None else previous[window], window)
                x0, eps = predict_x0_eps(output, current, _at(t, current), alpha_bar, prediction_type)
                del output
                fresh = noise(index + 1, window) if DRAWS_NOISE[self.kind] and not last else None
                x_next = update(current, x0, eps, t, t_next, alpha_bar, fresh)
                if last:
                    return finish(x_next, window) if finish is not None else x_next
                return torch.cat([x_next, x0], dim=1) if keep_x0 else x_next

            joined = join(advance)
            if last:
                result = joined
            elif keep_x0:
                channels = joined.shape[1] // 2
                x_t, previous = joined[:, :channels], joined[:, channels:]
            else:
                x_t = joined
            if on_step is not None:
                on_step(index)
        assert result is not None
        return result
