import json

import pytest
import torch

from turbosr.config import ScheduleConfig
from turbosr.diffusion import add_noise, make_alpha_bar, training_target
from turbosr.models import build_model, model_config
from turbosr.train.scale_distill import student_target_from_teacher, teacher_inputs


@pytest.mark.parametrize("target", ["residual", "latent"])
@pytest.mark.parametrize(("teacher_prediction", "student_prediction"), [("v", "v"), ("v", "sample"), ("sample", "v")])
def test_perfect_teacher_gives_the_students_true_target(target, teacher_prediction, student_prediction):
    """Teacher and student anchor on different LQ latents; converting a perfect teacher's output must give
    exactly the student's own ground-truth target at the student's noise level."""
    teacher, _ = build_model(model_config("tiny", target=target, prediction_type=teacher_prediction))
    student, _ = build_model(model_config("tiny", target=target, prediction_type=student_prediction))
    scale = torch.linspace(0.3, 1.7, 8)
    teacher.residual_scale.copy_(scale)
    student.residual_scale.copy_(scale)
    alpha_bar = make_alpha_bar(ScheduleConfig())
    g = torch.Generator().manual_seed(0)
    hq, lq_teacher, lq_student, eps = (torch.randn(3, 8, 4, 4, generator=g) for _ in range(4))
    t = torch.tensor([0, 400, 999])
    x_t_student = add_noise(student.to_x0(hq, lq_student), eps, t, alpha_bar)
    signal = alpha_bar[t].sqrt().view(-1, 1, 1, 1)
    x_t_teacher = teacher_inputs(teacher, student, x_t_student, lq_student, lq_teacher, signal)
    # both see the same noisy HQ latent, expressed for their own anchors
    assert torch.allclose(x_t_teacher, add_noise(teacher.to_x0(hq, lq_teacher), eps, t, alpha_bar), atol=1e-5)
    perfect = training_target(teacher.to_x0(hq, lq_teacher), eps, t, alpha_bar, teacher_prediction)
    converted = student_target_from_teacher(perfect, x_t_teacher, t, alpha_bar, teacher, student, lq_teacher,
                                            lq_student, teacher_prediction, student_prediction)
    wanted = training_target(student.to_x0(hq, lq_student), eps, t, alpha_bar, student_prediction)
    assert torch.allclose(converted, wanted, atol=2e-4)


@pytest.fixture
def hr(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for index in range(2):
        image = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).resize((128, 96), Image.BICUBIC)
        image.save(tmp_path / f"p{index}.png")
    return tmp_path


def test_the_student_regresses_exactly_the_teachers_prediction(tmp_path, hr):
    """An oracle teacher whose network outputs the constant c (x0 prediction, latent target: the student's target
    is then c itself, whatever the batch) and a student starting at the constant b: the first step's logged loss
    is exactly mean((b - c)^2). Any other teacher (or ground truth leaking in) would give another number."""
    from turbosr.config import load_config
    from turbosr.pipeline import SRPipeline
    from turbosr.train import scale_distill

    c = torch.linspace(-0.5, 0.5, 8)
    b = torch.linspace(0.3, -0.2, 8)
    folders = {}
    for name, scale, bias in (("teacher", 2, c), ("student", 4, b)):
        config = model_config("tiny", scale=scale, target="latent", prediction_type="sample")
        torch.manual_seed(0)
        denoiser, autoencoder = build_model(config)
        with torch.no_grad():
            denoiser.unet.conv_out.weight.zero_()
            denoiser.unet.conv_out.bias.copy_(bias)
        autoencoder.fit(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1)
        folders[name] = tmp_path / name
        SRPipeline(denoiser, autoencoder, config).save_pretrained(folders[name])
    config = load_config(scale_distill.ScaleDistillConfig, None, [
        "model.preset=tiny", "model.target=latent", "model.prediction_type=sample", f"data.folder={hr}",
        "data.crop_size=64", f"run.output_dir={tmp_path / 'run'}", "run.max_steps=1", "run.batch_size=2",
        "run.log_every_steps=1", f"teacher={folders['teacher']}", "teacher_scale=2",
        f"init_from={folders['student']}"])
    scale_distill.train(config)
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert logged == pytest.approx(float(((b - c) ** 2).mean()), rel=1e-5)
