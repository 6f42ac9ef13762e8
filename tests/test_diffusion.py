import pytest
import torch

from turbosr.config import ScheduleConfig
from turbosr.diffusion import (
    Sampler,
    add_noise,
    keyed_noise,
    make_alpha_bar,
    make_betas,
    output_from_x0_eps,
    predict_x0_eps,
    sampling_timesteps,
    training_target,
)


def test_zero_terminal_snr_schedule_ends_at_pure_noise_and_keeps_start():
    plain = make_alpha_bar(ScheduleConfig(zero_terminal_snr=False))
    rescaled = make_alpha_bar(ScheduleConfig(zero_terminal_snr=True))
    assert rescaled[-1] == 0
    assert plain[-1] > 0
    assert torch.allclose(rescaled[0], plain[0], atol=1e-6)
    assert torch.all(rescaled[1:] <= rescaled[:-1])


def test_linear_schedule_betas_are_linear():
    betas = make_betas(ScheduleConfig(beta_schedule="linear", beta_start=1e-4, beta_end=2e-2, zero_terminal_snr=False,
                                      num_train_timesteps=5))
    assert torch.allclose(betas, torch.tensor([1e-4, 0.005075, 0.01005, 0.015025, 0.02], dtype=torch.float64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "sample"])
def test_prediction_conversions_round_trip(prediction_type):
    alpha_bar = make_alpha_bar(ScheduleConfig(zero_terminal_snr=False))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=generator)
    eps = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 500, 998])
    x_t = add_noise(x0, eps, t, alpha_bar)
    target = training_target(x0, eps, t, alpha_bar, prediction_type)
    x0_back, eps_back = predict_x0_eps(target, x_t, t, alpha_bar, prediction_type)
    assert torch.allclose(x0_back, x0, atol=2e-3)
    assert torch.allclose(eps_back, eps, atol=2e-3)
    assert torch.allclose(output_from_x0_eps(x0, eps, t, alpha_bar, prediction_type), target, atol=1e-6)


def test_v_target_matches_definition():
    alpha_bar = make_alpha_bar(ScheduleConfig())
    x0, eps = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0)
    t = torch.tensor([300])
    a = alpha_bar[300]
    expected = a.sqrt() * 2.0 - (1 - a).sqrt() * 1.0
    assert torch.allclose(training_target(x0, eps, t, alpha_bar, "v"), expected.view(1, 1, 1, 1))


def test_sampling_timesteps_trailing_and_strength():
    assert sampling_timesteps(1, 1000) == [999]
    assert sampling_timesteps(4, 1000) == [999, 749, 499, 249]
    assert sampling_timesteps(2, 1000, strength=0.5) == [499, 249]
    assert sampling_timesteps(2000, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        sampling_timesteps(0, 1000)
    with pytest.raises(ValueError):
        sampling_timesteps(1, 1000, strength=0.0)


def test_one_step_v_sampling_from_last_timestep_returns_the_predicted_x0():
    """At zero terminal SNR, x_T is pure noise and one v-step gives x0 = -v."""
    alpha_bar = make_alpha_bar(ScheduleConfig())
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    wanted = torch.full_like(noise, 0.25)
    x0 = Sampler().sample(lambda x_t, t, *_: -wanted, lambda _, w: noise[w], lambda w: torch.zeros_like(noise)[w], [999],
                          alpha_bar, "v")
    assert torch.allclose(x0, wanted)


def test_multistep_sampling_with_oracle_recovers_x0():
    """A denoiser that knows x0 exactly makes DDIM return x0 for any number of steps."""
    alpha_bar = make_alpha_bar(ScheduleConfig())
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(1, 2, 4, 4, generator=generator)
    noise = torch.randn(1, 2, 4, 4, generator=generator)
    calls = []

    def oracle(x_t, t, previous, window):
        calls.append((t, previous is None))
        return truth  # "sample" prediction

    for kind in ("ddim", "renoise"):  # either update rule keeps an exact x0
        calls.clear()
        result = Sampler(kind).sample(oracle, lambda _, w: noise[w], lambda w: torch.zeros_like(noise)[w],
                                      sampling_timesteps(5, 1000), alpha_bar, "sample")
        assert torch.allclose(result, truth)
        # the previous x0 reaches the network under the renoise rule (AddSR PSR reads it), never under DDIM
        assert calls == [(999, True)] + [(t, kind == "ddim") for t in (799, 599, 399, 199)]


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_epsilon_sampling_with_oracle_recovers_x0_on_the_scaled_linear_schedule(steps):
    """An eps-predicting denoiser that knows x0 gives back x0 through DDIM (the eps -> x0 division by
    sqrt(alpha_bar) at t=999, 1/0.068 on scaled-linear, is exact when eps is)."""
    alpha_bar = make_alpha_bar(ScheduleConfig(zero_terminal_snr=False))
    assert alpha_bar[999] > 1e-3  # not zero terminal SNR: eps is defined at every step
    generator = torch.Generator().manual_seed(5)
    truth = torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64)
    ab = alpha_bar.double()

    def oracle(x_t, t, *_):
        return (x_t - ab[t].sqrt() * truth) / (1 - ab[t]).sqrt()

    result = Sampler().sample(oracle, lambda _, w: noise[w], lambda w: torch.zeros_like(noise)[w],
                              sampling_timesteps(steps, 1000), ab, "epsilon")
    assert torch.allclose(result, truth, atol=1e-9)


def test_the_two_update_rules_differ_only_in_the_noise_they_add():
    """DDIM re-noises x0 with the predicted noise, the renoise rule with noise(i) of step i: with a denoiser
    that predicts a fixed eps, each rule's x_t at step 2 is exactly add_noise(x0, that noise, t)."""
    from turbosr.diffusion import add_noise, predict_x0_eps

    alpha_bar = make_alpha_bar(ScheduleConfig())
    generator = torch.Generator().manual_seed(0)
    fixed = torch.randn(1, 2, 4, 4, generator=generator)
    fresh = {i: torch.randn(1, 2, 4, 4, generator=generator) for i in range(3)}
    for kind in ("ddim", "renoise"):
        seen: list[torch.Tensor] = []

        def denoise(x_t, t, *_, seen=seen):
            seen.append(x_t)
            return fixed

        Sampler(kind).sample(denoise, lambda i, w: fresh[i][w], lambda w: torch.zeros(1, 2, 4, 4)[w], [999, 499],
                             alpha_bar, "v")
        x0, eps = predict_x0_eps(fixed, seen[0], torch.tensor([999]), alpha_bar, "v")
        expected = add_noise(x0, eps if kind == "ddim" else fresh[1], torch.tensor([499]), alpha_bar)
        assert torch.allclose(seen[1], expected, atol=1e-6), kind


def test_renoise_sampling_walks_the_trained_grid():
    """An AddSR student trained on K = 4 steps (999/749/499/249): k <= 4 steps take the first k of them, the
    transitions it was trained on; DDIM (and k > K) spread k steps over the schedule."""
    assert Sampler("renoise", trained_steps=4).timesteps(2, 1000) == [999, 749]
    assert Sampler("renoise", trained_steps=4).timesteps(4, 1000) == [999, 749, 499, 249]
    assert Sampler("renoise", trained_steps=4).timesteps(3, 1000) == [999, 749, 499]
    assert Sampler("ddim").timesteps(2, 1000) == [999, 499]
    assert Sampler("renoise", trained_steps=4).timesteps(8, 1000) == sampling_timesteps(8, 1000)
    with pytest.raises(ValueError, match="sampler"):
        Sampler("euler")


def test_keyed_noise_is_a_function_of_position_step_and_seed():
    shape = (2, 3, 150, 97)
    whole = keyed_noise(7, 0, shape)
    assert torch.equal(keyed_noise(7, 0, shape, (40, 111), (60, 97)), whole[..., 40:111, 60:97])  # any window
    assert not torch.equal(keyed_noise(7, 1, shape), whole)  # another step
    assert not torch.equal(keyed_noise(8, 0, shape), whole)  # another seed
    assert not torch.equal(whole[0], whole[1])  # each sample its own
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 1) < 0.02
