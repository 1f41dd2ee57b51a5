"""Legacy image helpers: pad, translate and the flat/channel reshapes."""

import numpy as np
import pytest
from scipy.ndimage import shift as nd_shift
from support import random_object

from ptycho import tf_helper


def test_pad_zero_pads_both_spatial_axes(rng):
    imgs = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    padded = tf_helper.pad(imgs, 4).numpy()
    assert padded.shape == (2, 13, 15, 3)
    np.testing.assert_array_equal(padded[:, 4:-4, 4:-4], imgs)
    padded[:, 4:-4, 4:-4] = 0
    assert not padded.any()


def test_translate_sign_with_a_delta_image():
    """Content moves by +offset: a delta at (y=5, x=3) shifted by [dx, dy] = [2, 1]."""
    img = np.zeros((1, 12, 12, 1), np.float32)
    img[0, 5, 3, 0] = 1
    out = tf_helper.translate(img, np.array([[2.0, 1.0]], np.float32)).numpy()[0, :, :, 0]
    assert out[6, 5] == 1 and out.sum() == 1


def test_translate_half_pixel_splits_evenly():
    img = np.zeros((1, 8, 8, 1), np.complex64)
    img[0, 4, 4, 0] = 2 + 2j
    out = tf_helper.translate(img, np.array([[0.5, 0.0]], np.float32)).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(out[4, 4:6], [1 + 1j, 1 + 1j])
    assert np.count_nonzero(out) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_translate_matches_scipy_shift(rng, dtype, interpolation):
    imgs = random_object(rng, (3, 17, 22, 2), np.complex128)
    if not np.iscomplexobj(np.zeros(1, dtype)):
        imgs = imgs.real
    imgs = imgs.astype(dtype)
    offsets = np.array([[1.25, -2.5], [-3.75, 0.3], [0.0, 0.0]])
    if interpolation == "nearest":
        offsets = np.array([[1.0, -2.0], [-4.0, 0.0], [0.0, 3.0]])  # integers: no rounding tie
    offsets = offsets.astype(np.float32)
    out = tf_helper.translate(imgs, offsets, interpolation).numpy()
    assert out.dtype == dtype and out.shape == imgs.shape
    order = 1 if interpolation == "bilinear" else 0
    tolerance = 1e-6 if dtype in (np.float32, np.complex64) else 1e-12
    for b, (dx, dy) in enumerate(offsets.astype(np.float64)):
        for ch in range(2):
            img = imgs[b, :, :, ch].astype(np.complex128)
            expected = sum(
                unit * nd_shift(part, (dy, dx), order=order, mode="grid-constant", cval=0.0)
                for unit, part in ((1, img.real), (1j, img.imag))
            )
            assert np.abs(out[b, :, :, ch] - expected).max() <= tolerance * np.abs(imgs).max()


def test_translate_precision_does_not_degrade_with_image_size(rng):
    """A float32 offset of 1/3 pixel on a 1500 x 1500 image is still exact to 1e-6."""
    img = np.zeros((1, 1500, 1500, 1), np.complex64)
    img[0, 1400, 1450, 0] = 1
    offset = np.float32(1 / 3)
    out = tf_helper.translate(img, np.array([[offset, 0.0]], np.float32)).numpy()[0, 1400, :, 0]
    np.testing.assert_allclose(out[1450:1452].real, [1 - float(offset), float(offset)], atol=1e-7)


def test_translate_far_offset_gives_zeros(rng):
    imgs = random_object(rng, (1, 10, 10, 1))
    out = tf_helper.translate(imgs, np.array([[1e9, -1e9]], np.float32)).numpy()
    assert not out.any()


def test_channel_flat_round_trip(rng):
    img = rng.standard_normal((3, 6, 6, 4)).astype(np.float32)
    flat = tf_helper._channel_to_flat(img)
    assert flat.shape == (12, 6, 6, 1)
    np.testing.assert_array_equal(flat[1 * 4 + 2, :, :, 0], img[1, :, :, 2])  # i = b * c + k
    back = tf_helper._flat_to_channel(flat, N=6, gridsize=2)
    np.testing.assert_array_equal(back.numpy(), img)


def test_flat_to_channel_reads_legacy_params(rng, legacy_cfg):
    legacy_cfg.update(N=5, gridsize=3)
    flat = rng.standard_normal((18, 5, 5, 1)).astype(np.float32)
    assert tf_helper._flat_to_channel(flat).shape == (2, 5, 5, 9)
