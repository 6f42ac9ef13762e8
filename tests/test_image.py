import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from turbosr.image import pil_to_tensor, tensor_to_pil, upscale_alpha
from turbosr.image_files import ImageReadError, load_image, save_image
from turbosr.inputs import find_images


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10] = 255  # white band on the left
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.rgb.shape == (1, 3, 40, 20)
    assert float(loaded.rgb[0, :, :8, :].mean()) > 0.9  # the band is now at the top
    assert float(loaded.rgb[0, :, -8:, :].mean()) < 0.1


def test_grey_16bit_palette_cmyk_and_alpha(tmp_path):
    Image.new("L", (5, 4), 128).save(tmp_path / "grey.png")
    grey = load_image(tmp_path / "grey.png")
    assert grey.rgb.shape == (1, 3, 4, 5) and abs(float(grey.rgb.mean()) - 128 / 255) < 1e-6

    Image.fromarray(np.full((4, 5), 32768, dtype=np.uint16)).save(tmp_path / "deep.png")
    deep = load_image(tmp_path / "deep.png")
    assert deep.bit_depth == 16 and abs(float(deep.rgb[0, 0, 0, 0]) - 32768 / 65535) < 1e-6

    palette = Image.new("P", (6, 6))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 3, 6))
    palette.info["transparency"] = 0
    palette.save(tmp_path / "pal.png", transparency=0)
    loaded = load_image(tmp_path / "pal.png")
    assert loaded.alpha is not None and float(loaded.alpha[0, 0, 0, 0]) == 1.0 and float(loaded.alpha[0, 0, 0, 5]) == 0

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    cmyk = load_image(tmp_path / "cmyk.jpg")
    assert cmyk.rgb.shape == (1, 3, 4, 4) and float(cmyk.rgb[0, 0].mean()) > 0.8  # red stays red

    Image.new("RGBA", (4, 4), (10, 20, 30, 100)).save(tmp_path / "rgba.png")
    rgba = load_image(tmp_path / "rgba.png")
    assert abs(float(rgba.alpha.mean()) - 100 / 255) < 1e-6


def test_alpha_and_icc_round_trip(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = torch.rand(1, 3, 6, 7)
    alpha = torch.rand(1, 1, 6, 7)
    save_image(image, tmp_path / "x.png", alpha=alpha, icc_profile=icc)
    loaded = load_image(tmp_path / "x.png")
    assert loaded.icc_profile == icc
    assert torch.allclose(loaded.alpha, (alpha * 255).round() / 255, atol=1e-6)
    assert torch.allclose(loaded.rgb, (image * 255).round() / 255, atol=1e-6)


@pytest.mark.parametrize(("content", "suffix", "message"), [
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, ".png", "cannot decode|not a supported"),
    (b"just some text", ".txt", "not a supported"),
    (b"\x00\x01\x02" * 50, ".png", "not a supported|cannot decode"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as error:
        load_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_jpeg_missing_path_directory_and_bomb_limit(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path)
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="more than 5000 pixels"):
        load_image(tmp_path / "big.png", max_pixels=5000)


def test_save_is_atomic_and_never_overwrites_by_default(tmp_path):
    target = tmp_path / "sub" / "out.png"
    save_image(torch.zeros(1, 3, 4, 4), target)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_image(torch.ones(1, 3, 4, 4), target)
    assert target.read_bytes() == before
    save_image(torch.ones(1, 3, 4, 4), target, overwrite=True)
    assert target.read_bytes() != before
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]  # no temporary files left
    with pytest.raises(ValueError, match="unknown image suffix"):
        save_image(torch.zeros(1, 3, 4, 4), tmp_path / "out.xyz")


def test_jpeg_drops_alpha_and_upscale_alpha(tmp_path):
    save_image(torch.rand(1, 3, 4, 4), tmp_path / "a.jpg", alpha=torch.ones(1, 1, 4, 4))
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    big = upscale_alpha(torch.rand(1, 1, 3, 5), 4)
    assert big.shape == (1, 1, 12, 20) and 0 <= float(big.min()) and float(big.max()) <= 1


def test_find_images_folders_globs_and_errors(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for path in ("a/1.png", "a/b/2.jpg", "a/notes.txt", "3.webp"):
        (tmp_path / path).write_bytes(b"")
    found = find_images([tmp_path / "a", str(tmp_path / "*.webp"), tmp_path / "a" / "1.png"]).items
    assert [(p.name, str(r)) for p, r in found] == [("3.webp", "3.webp"), ("1.png", "1.png"), ("2.jpg", "b/2.jpg")]
    with pytest.raises(FileNotFoundError, match="no image files match"):
        find_images([str(tmp_path / "*.gif")])
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_images([tmp_path / "nope.png"])


def test_tensor_pil_round_trip_is_exact():
    array = (np.random.default_rng(0).random((5, 6, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(image))), array)


def test_glob_inputs_keep_the_tree_below_the_pattern_root(tmp_path):
    for path in ("shots/a/x.jpg", "shots/b/x.jpg", "shots/top.jpg"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    found = find_images([str(tmp_path / "shots" / "**" / "*.jpg")]).items
    assert sorted(str(relative) for _, relative in found) == ["a/x.jpg", "b/x.jpg", "top.jpg"]


def _gradient16(height: int = 12, width: int = 20) -> np.ndarray:
    """A 16-bit RGB gradient whose values are not multiples of 257 (an 8-bit round trip would change them)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([1000 + 37 * x + 5 * y, 65535 - 91 * x * y, 3 + 2011 * y], axis=-1).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_round_trips_at_full_precision(tmp_path, suffix):
    import png
    import tifffile

    pixels = _gradient16()
    source = tmp_path / f"deep{suffix}"
    if suffix == ".png":
        png.from_array(pixels.reshape(12, -1), mode="RGB;16").save(str(source))
    else:
        tifffile.imwrite(source, pixels, photometric="rgb")
    loaded = load_image(source)
    assert loaded.bit_depth == 16 and loaded.rgb.shape == (1, 3, 12, 20)
    assert np.array_equal((loaded.rgb[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16), pixels)
    assert abs(float(loaded.rgb[0, 0, 0, 0]) * 65535 - 1000) < 1e-3  # 1000, not the 8-bit 771 (3 * 257)
    out = save_image(loaded.rgb, tmp_path / f"out{suffix}", bit_depth=16)
    again = load_image(out)
    assert again.bit_depth == 16 and torch.equal(again.rgb, loaded.rgb)
    if suffix == ".png":
        assert png.Reader(filename=str(out)).read()[3]["bitdepth"] == 16


def test_16bit_png_keeps_its_icc_profile_and_exif_and_applies_orientation(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = torch.rand(1, 3, 6, 10, generator=torch.Generator().manual_seed(0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: displayed after a 90-degree clockwise turn
    exif[0x010F] = "turbosr-test-camera"
    written = save_image(rgb, tmp_path / "a.png", icc_profile=icc, exif=exif.tobytes(), bit_depth=16)
    loaded = load_image(written)
    assert loaded.icc_profile == icc and loaded.rgb.shape == (1, 3, 10, 6)  # orientation applied
    assert torch.allclose(loaded.rgb, rgb.rot90(3, (-2, -1)), atol=1 / 65535)
    kept = Image.Exif()
    kept.load(loaded.exif)
    assert kept.get(0x010F) == "turbosr-test-camera" and 0x0112 not in kept


@pytest.mark.parametrize(("suffix", "quality"), [(".jpg", 60), (".webp", 80), (".png", 95)])
def test_output_formats_carry_icc_and_exif_without_orientation(tmp_path, suffix, quality):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.fromarray((np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8))
    exif = source.getexif()
    exif[0x0112] = 3
    exif[0x010F] = "camera"
    source.save(tmp_path / "in.jpg", icc_profile=icc, exif=exif.tobytes(), quality=98)
    loaded = load_image(tmp_path / "in.jpg")
    out = save_image(loaded.rgb, tmp_path / f"out{suffix}", icc_profile=loaded.icc_profile, exif=loaded.exif,
                     quality=quality)
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == icc
        assert written.getexif().get(0x010F) == "camera" and 0x0112 not in written.getexif()


def _reference_rgb(tmp_path, seed=0):
    """A 48 x 32 16-bit RGB image and the same pixels written as a plain 16-bit RGB PNG (the reference reading)."""
    rng = np.random.default_rng(seed)
    samples = (rng.random((32, 48, 3)) * 65535).round().astype(np.uint16)
    rgb = torch.from_numpy(samples.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    save_image(rgb, tmp_path / "reference.png", bit_depth=16)
    return samples, load_image(tmp_path / "reference.png").rgb


def test_planar_and_cmyk_16bit_tiffs_read_like_the_same_rgb_image(tmp_path):
    import tifffile

    samples, reference = _reference_rgb(tmp_path)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(samples, -1, 0), photometric="rgb", planarconfig="separate")
    planar = load_image(tmp_path / "planar.tif")
    assert planar.rgb.shape == (1, 3, 32, 48) and planar.alpha is None and planar.bit_depth == 16
    assert torch.equal(planar.rgb, reference)
    # CMYK with K: R = (1 - C)(1 - K) inverted exactly (up to 16-bit rounding of the CMYK samples)
    rgb = samples.astype(np.float64) / 65535
    k = 1 - rgb.max(-1, keepdims=True)
    cmy = (1 - rgb - k) / np.maximum(1 - k, 1e-9)
    cmyk = (np.concatenate([cmy, k], -1) * 65535).round().astype(np.uint16)
    tifffile.imwrite(tmp_path / "cmyk.tif", cmyk, photometric="separated")
    loaded = load_image(tmp_path / "cmyk.tif")
    assert loaded.alpha is None and loaded.rgb.shape == reference.shape
    assert float((loaded.rgb - reference).abs().max()) < 3 / 65535
    # with an alpha channel the alpha is kept, separately
    alpha = (np.random.default_rng(1).random((32, 48, 1)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgba.tif", np.concatenate([samples, alpha], -1), photometric="rgb",
                     extrasamples=[2])
    with_alpha = load_image(tmp_path / "rgba.tif")
    assert torch.equal(with_alpha.rgb, reference)
    assert torch.allclose(with_alpha.alpha[0, 0], torch.from_numpy(alpha[..., 0] / 65535).float())


def test_float_tiffs_are_read_and_non_finite_pixels_refused(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    values = rng.random((16, 20, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "float.tif", values, photometric="rgb")
    loaded = load_image(tmp_path / "float.tif")
    assert torch.allclose(loaded.rgb[0].permute(1, 2, 0), torch.from_numpy(values))
    grey = rng.random((16, 20)).astype(np.float32)
    for bad in (np.nan, np.inf):
        for name, array in (("rgb", values.copy()), ("grey", grey.copy())):
            array.flat[7] = bad
            tifffile.imwrite(tmp_path / f"{name}.tif", array, photometric="rgb" if array.ndim == 3 else "minisblack")
            with pytest.raises(ImageReadError, match="NaN or infinite"):
                load_image(tmp_path / f"{name}.tif")
    tifffile.imwrite(tmp_path / "signed.tif", (values * 100).astype(np.int16), photometric="rgb")
    with pytest.raises(ImageReadError, match="signed"):
        load_image(tmp_path / "signed.tif")
