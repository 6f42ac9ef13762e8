"""AddSR (turbosr train adversarial-distill) on the tiny preset: every switch trains 2 steps and gives a loadable
few-step model; resume; the control branch starts as a no-op; self-refinement feeds the previous prediction;
the HR-regulated teacher really sees the HR latent, and the anchor conversion is exact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from turbosr.config import load_config, model_config
from turbosr.diffusion import add_noise, training_target
from turbosr.models import build_model
from turbosr.models.denoiser import Denoiser
from turbosr.pipeline import SRPipeline
from turbosr.train import adversarial_distill


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for index in range(3):
        noise = rng.random((24, 32, 3))
        Image.fromarray((noise * 255).astype(np.uint8)).resize((128, 96), Image.BICUBIC).save(folder / f"p{index}.png")
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tiny_x4_folder) -> Path:
    return tiny_x4_folder


def config_for(tmp_path: Path, hr_folder: Path, teacher_dir: Path, *extra: str):
    return load_config(adversarial_distill.AdversarialDistillConfig, None, [
        f"teacher={teacher_dir}", "model.preset=tiny", f"data.folder={hr_folder}", "data.crop_size=64",
        f"run.output_dir={tmp_path / 'run'}", "run.max_steps=2", "run.batch_size=2", "run.log_every_steps=1",
        "run.checkpoint_every_steps=1", "run.validate_every_steps=2", "run.validation_images=2", *extra])


@pytest.mark.parametrize("switches", [
    [],  # everything on: PSR, HR-regulated, exponential weights, feature discriminator
    ["psr=false", "hr_regulated=false"],
    ["distill_weighting=fixed", "adaptive_indexing=reference", "one_step_fraction=0"],
    ["adversarial.weight=0"],
    ["adversarial.critic=patchgan", "adversarial.diffaugment=false", "distill_weighting=linear", "data.degradation=bicubic"],
])
def test_two_steps_with_each_switch_give_a_loadable_few_step_model(tmp_path, hr_folder, teacher_dir, switches):
    folder = adversarial_distill.train(config_for(tmp_path, hr_folder, teacher_dir, *switches))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    trained = [r for r in log if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(np.isfinite(r["distill"]) for r in trained)
    assert ("adversarial" in trained[0]) == ("adversarial.weight=0" not in switches)
    student = SRPipeline.from_pretrained(folder / "model")
    assert student.config.control and student.sampler.kind == "renoise"
    assert student.denoiser.control is not None
    for steps in (1, 4):
        assert student(torch.rand(1, 3, 16, 16), num_steps=steps).shape == (1, 3, 64, 64)


def test_resume_continues_where_the_run_stopped(tmp_path, hr_folder, teacher_dir):
    adversarial_distill.train(config_for(tmp_path, hr_folder, teacher_dir))
    folder = adversarial_distill.train(config_for(tmp_path, hr_folder, teacher_dir, "run.max_steps=3"))
    assert json.loads((folder / "progress.json").read_text())["step"] == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]


@pytest.mark.parametrize("unet", ["unet2d", "unet2d_condition"])
def test_zero_initialised_control_branch_leaves_the_output_unchanged(unet):
    config = dataclasses.replace(model_config("tiny", scale=4), unet=unet)
    torch.manual_seed(0)
    denoiser, _ = build_model(config)
    torch.nn.init.normal_(denoiser.unet.conv_out.weight, 0, 0.1)
    x_t, lq = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    t = torch.tensor([999, 3])
    before = denoiser(x_t, lq, t)
    denoiser.add_control()
    assert torch.equal(denoiser(x_t, lq, t, torch.randn(2, 8, 8, 8)), before)
    with torch.no_grad():  # a trained branch does change it: the residuals really reach the UNet
        for parameter in denoiser.control.parameters():
            parameter.normal_(0, 0.02)
    assert not torch.allclose(denoiser(x_t, lq, t, torch.randn(2, 8, 8, 8)), before)


def test_self_refinement_feeds_the_previous_prediction(tmp_path, hr_folder, teacher_dir, monkeypatch):
    """Training with PSR (no one-step samples): the trained call's control condition is the HQ latent predicted
    by the preceding no-grad call. Inference: step 2 sees w * previous prediction + (1 - w) * LQ."""
    calls = []
    original = Denoiser.forward

    def spy(self, x_t, condition, t, control_condition=None):
        output = original(self, x_t, condition, t, control_condition)
        if self.control is not None:
            t_batch = torch.full((len(x_t),), t) if isinstance(t, int) else t.clone()
            calls.append((t_batch, None if control_condition is None else control_condition.detach().clone(),
                          output.detach().clone(), x_t.detach().clone(), condition.detach().clone(), self))
        return output

    monkeypatch.setattr(Denoiser, "forward", spy)
    adversarial_distill.train(config_for(tmp_path, hr_folder, teacher_dir, "one_step_fraction=0",
                                         "run.max_steps=1", "run.validation_images=0"))
    from turbosr.diffusion import make_alpha_bar, predict_x0_eps

    (t0, control0, out0, x0_t, lq0, den), (t1, control1, *_rest) = calls[0], calls[1]
    assert torch.all(t1 < t0)  # the trained step follows the no-grad one
    alpha_bar = make_alpha_bar(model_config("tiny").schedule)
    previous, _ = predict_x0_eps(out0.float(), x0_t, t0, alpha_bar, "v")
    assert torch.allclose(control1, den.from_x0(previous, lq0), atol=1e-5)
    assert torch.equal(control0, lq0)
    # inference: the sampler's second call is conditioned on the mixed prediction
    calls.clear()
    student = SRPipeline.from_pretrained(tmp_path / "run" / "checkpoint-latest" / "model")
    weight = student.sampler.psr_weight
    lq_latent = torch.randn(1, 8, 4, 4)
    student.denoise_latents(lq_latent, num_steps=2, generator=torch.Generator().manual_seed(0))
    (t_a, control_a, out_a, x_a, _, den_a), (_, control_b, *_rest) = calls[0], calls[1]
    first, _ = predict_x0_eps(out_a.float(), x_a, t_a, student.alpha_bar, "v")
    expected = weight * den_a.from_x0(first, lq_latent) + (1 - weight) * lq_latent
    assert torch.equal(control_a, lq_latent) and torch.allclose(control_b, expected, atol=1e-5)


def test_hr_regulated_teacher_sees_the_hr_latent_and_the_anchor_conversion_is_exact(teacher_dir):
    teacher = SRPipeline.from_pretrained(teacher_dir)
    generator = torch.Generator().manual_seed(3)
    student_hq, hr, other_hr = (torch.randn(2, 8, 6, 6, generator=generator) for _ in range(3))
    s = torch.tensor([100, 900])
    noise = torch.randn(2, 8, 6, 6, generator=generator)
    target = adversarial_distill.teacher_target(teacher, student_hq, hr, s, noise)
    assert not torch.allclose(target, adversarial_distill.teacher_target(teacher, student_hq, other_hr, s, noise))
    # an oracle teacher that knows the true HQ latent: whatever the anchor, the target is exactly that latent
    true_hq = torch.randn(2, 8, 6, 6, generator=generator)
    alpha_bar = teacher.alpha_bar

    def oracle(x_s, anchor, t, control_condition=None):
        x0 = teacher.denoiser.to_x0(true_hq, anchor)
        signal, sigma = alpha_bar[t].sqrt().view(-1, 1, 1, 1), (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
        return training_target(x0, (x_s - signal * x0) / sigma, t, alpha_bar, "v")

    teacher.denoiser.forward = oracle
    for anchor in (hr, other_hr):
        recovered = adversarial_distill.teacher_target(teacher, student_hq, anchor, s, noise)
        assert torch.allclose(recovered, true_hq, atol=1e-4)
    assert torch.allclose(add_noise(torch.zeros(1), torch.ones(1), torch.tensor([999]), alpha_bar), torch.ones(1))
    # (zero terminal SNR: the pure-noise step x_999 is the noise itself, which the one-step branch relies on)


@pytest.mark.parametrize("unet", ["unet2d", "unet2d_condition"])
def test_feature_discriminator_scores_with_either_unet_kind(unet):
    """The latent discriminator runs the frozen teacher's encoder half with the teacher's own cross-attention
    states (the `sd` preset's UNet needs them), and scores depend on the LQ condition."""
    from turbosr.models.discriminator import FeatureDiscriminator

    config = dataclasses.replace(model_config("tiny", scale=4), unet=unet)
    torch.manual_seed(0)
    teacher, _ = build_model(config)
    discriminator = FeatureDiscriminator(teacher, config.latent_channels)
    x, lq = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    logits = discriminator(x, lq, torch.tensor([5, 900]))
    assert logits.shape[0] == 2 and logits.dim() == 2 and torch.isfinite(logits).all()
    assert not torch.equal(discriminator(x, torch.randn(2, 8, 8, 8), torch.tensor([5, 900])), logits)
    assert all(not name.startswith("teacher") for name, _ in discriminator.named_parameters())


def test_which_adaptive_weight_each_sample_gets_under_both_indexings():
    """The weight table entry per sample, exactly: a pure one-step sample, and two-step samples started at steps
    0, 1, 2 of a 4-step schedule (so trained at 1, 2, 3). Paper: by the trained step. Reference (the released
    code, HEAD 8721d93): by the start step, and the last entry for the pure one-step sample."""
    from turbosr.losses import timestep_adaptive_weight
    from turbosr.train.adversarial_distill import weight_index

    one_step = torch.tensor([True, False, False, False])
    start = torch.tensor([0, 0, 1, 2])
    trained = torch.where(one_step, 0, start + 1)
    paper = timestep_adaptive_weight(weight_index(one_step, trained, start, 4, "paper"))
    reference = timestep_adaptive_weight(weight_index(one_step, trained, start, 4, "reference"))
    assert paper.tolist() == pytest.approx([0.5, 1.05, 2.205, 4.6305])
    assert reference.tolist() == pytest.approx([4.6305, 0.5, 1.05, 2.205])


def test_the_adversarial_section_is_the_shared_config_with_addsr_s_defaults():
    """One adversarial config for every method: AddSR reads the same section as decoder/autoencoder training, with
    its own defaults (weight 0.02, the teacher-feature critic of width 64), and refuses what its latent critic
    cannot do."""
    from turbosr.config import ConfigError, load_config
    from turbosr.run_config import AdversarialConfig
    from turbosr.train.adversarial_distill import AdversarialDistillConfig

    config = load_config(AdversarialDistillConfig, None, ["teacher=t", "adversarial.diffaugment=false"])
    assert isinstance(config.adversarial, AdversarialConfig)
    assert (config.adversarial.weight, config.adversarial.critic, config.adversarial.discriminator_channels) == (
        0.02, "teacher", 64) and config.adversarial.diffaugment is False
    for bad, words in (("adversarial.critic=inception", "teacher or patchgan"),
                       ("adversarial.feature_matching=0.5", "do not apply"), ("discriminator=pixel", "unknown")):
        with pytest.raises(ConfigError, match=words):
            load_config(AdversarialDistillConfig, None, ["teacher=t", bad])
