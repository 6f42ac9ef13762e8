import os

import pytest
import torch

from turbosr import checkpoint


def test_atomic_writes_and_clear_errors(tmp_path):
    checkpoint.write_json(tmp_path / "a" / "x.json", {"k": 1})
    assert checkpoint.read_json(tmp_path / "a" / "x.json") == {"k": 1}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        checkpoint.read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing"):
        checkpoint.load_tensors(tmp_path / "none.safetensors")
    tensors = {"w": torch.arange(6.0).view(2, 3)}
    checkpoint.save_tensors(tmp_path / "t.safetensors", tensors)
    assert torch.equal(checkpoint.load_tensors(tmp_path / "t.safetensors")["w"], tensors["w"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path, umask):
    """mkstemp creates 0600 files; a written output, JSON or checkpoint must get 0666 minus the umask instead."""
    from turbosr.image_files import save_image

    old = os.umask(umask)
    try:
        (tmp_path / "plain").write_bytes(b"x")
        expected = (tmp_path / "plain").stat().st_mode & 0o777
        written = [checkpoint.write_json(tmp_path / "x.json", {"k": 1}),
                   checkpoint.save_tensors(tmp_path / "t.safetensors", {"w": torch.zeros(2)}),
                   save_image(torch.zeros(1, 3, 4, 4), tmp_path / "out.png")]
    finally:
        os.umask(old)
    assert expected == 0o666 & ~umask
    assert [p.stat().st_mode & 0o777 for p in written] == [expected] * 3


def test_replace_folder_keeps_the_old_checkpoint_until_the_new_one_is_complete(tmp_path):
    final = tmp_path / "checkpoint-latest"
    first = checkpoint.staging_folder(final)
    (first / "progress.json").write_text('{"step": 1}')
    checkpoint.replace_folder(first, final)
    second = checkpoint.staging_folder(final)
    (second / "progress.json").write_text('{"step": 2}')
    # simulate a kill between the two renames of replace_folder: only the ".old" copy exists
    os.replace(final, final.with_name(f".{final.name}.old"))
    assert checkpoint.recover_folder(final) == final
    assert checkpoint.read_json(final / "progress.json") == {"step": 1}
    checkpoint.replace_folder(second, final)
    assert checkpoint.read_json(final / "progress.json") == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-latest"]
    assert checkpoint.recover_folder(tmp_path / "never") is None


def test_sharded_tensors_load_as_one_file(tmp_path):
    tensors = {f"layer{i}.weight": torch.randn(64, 64, generator=torch.Generator().manual_seed(i)) for i in range(5)}
    index = checkpoint.save_tensors(tmp_path / "denoiser.safetensors", tensors, max_shard_bytes=40_000)
    assert index.name == "denoiser.safetensors.index.json"
    shards = sorted(p.name for p in tmp_path.glob("denoiser-*.safetensors"))
    # 16 KiB tensors, whole tensors per shard: two per 40 kB shard, three shards (+ a small header each)
    assert len(shards) == 3 and all(p.stat().st_size <= 40_000 + 1_000 for p in tmp_path.glob("denoiser-*"))
    loaded = checkpoint.load_tensors(tmp_path / "denoiser.safetensors")
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    (tmp_path / shards[2]).unlink()
    with pytest.raises(FileNotFoundError, match="missing weights shard"):
        checkpoint.load_tensors(tmp_path / "denoiser.safetensors")


def test_int8_storage_round_trip_is_close_and_per_channel():
    weight = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[3] *= 100  # one loud channel must not cost the others their precision
    state = {"w": weight, "b": torch.randn(8), "buffer": torch.arange(3.0)}
    stored = checkpoint.compact_state(state, {"w", "b"}, "int8")
    assert stored["w"].dtype == torch.int8 and stored["b"].dtype == torch.float16
    assert stored["buffer"].dtype == torch.float32
    restored = checkpoint.expand_state(stored)
    assert set(restored) == set(state)
    error = (restored["w"] - weight).abs().flatten(1).amax(1)
    step = weight.abs().flatten(1).amax(1) / 127
    assert torch.all(error <= step / 2 + 1e-6)  # at most half a quantisation step, channel by channel
    assert torch.equal(restored["buffer"], state["buffer"])
    with pytest.raises(ValueError, match="unknown weight storage"):
        checkpoint.compact_state(state, {"w"}, "int4")
