import pytest
import torch
from safetensors.torch import save_file

from turbosr.metrics.lpips import LPIPS, load_lpips


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_layer_layout_matches_torchvision_names_and_shapes(net):
    model = LPIPS(net)
    names = {k for k in model.backbone.state_dict()}
    first_conv = "features.0.weight"
    assert first_conv in names
    last = "features.10.weight" if net == "alex" else "features.28.weight"
    assert last in names
    assert [h.in_channels for h in model.heads] == ([64, 192, 384, 256, 256] if net == "alex"
                                                   else [64, 128, 256, 512, 512])


def _random_weights(folder, net):
    torch.manual_seed(0)
    model = LPIPS(net)
    backbone = {k: v for k, v in model.backbone.state_dict().items()}
    heads = {f"lin{i}.model.1.weight": torch.rand_like(h.weight) for i, h in enumerate(model.heads)}
    stems = {"alex": ("alexnet", "lpips_alex"), "vgg": ("vgg16", "lpips_vgg")}[net]
    save_file(backbone, str(folder / f"{stems[0]}.safetensors"))
    torch.save(heads, folder / f"{stems[1]}.pth")


def test_loads_local_files_and_behaves_like_a_distance(tmp_path):
    _random_weights(tmp_path, "alex")
    model = load_lpips("alex", tmp_path)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        assert torch.allclose(model(a, a), torch.zeros(2), atol=1e-6)
        assert torch.allclose(model(a, b), model(b, a), atol=1e-6)
        near = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
        assert bool((model(a, near) < model(a, b)).all())


def test_missing_weights_name_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TURBOSR_LPIPS_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="alexnet.safetensors.*lpips_alex"):
        load_lpips("alex")
    with pytest.raises(FileNotFoundError, match="vgg16"):
        load_lpips("vgg", tmp_path)


def test_dists_loads_local_files_and_behaves_like_a_distance(tmp_path):
    from turbosr.metrics.dists import DISTS, l2_pool, load_dists

    torch.manual_seed(0)
    model = DISTS()
    save_file({k: v for k, v in model.backbone.state_dict().items()}, str(tmp_path / "vgg16.safetensors"))
    torch.save({"alpha": torch.rand(1, 1475, 1, 1), "beta": torch.rand(1, 1475, 1, 1)}, tmp_path / "dists.pth")
    loaded = load_dists(tmp_path)
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        assert float(loaded(a, a)) == pytest.approx(0.0, abs=1e-5)
        near = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
        assert float(loaded(a, near)) < float(loaded(a, b))
    assert l2_pool(torch.ones(1, 2, 8, 8)).shape == (1, 2, 4, 4)
    with pytest.raises(FileNotFoundError, match="dists.safetensors"):
        load_dists(tmp_path / "empty")
