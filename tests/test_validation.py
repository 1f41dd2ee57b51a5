"""Bad input gives a ValueError or TypeError that names the argument and the received value."""

import numpy as np
import pytest
import tensorflow as tf

from ptycho import extract_patches, raw_data, tf_helper
from ptycho.layers import PatchExtractionLayer

OBJ = np.ones((16, 16), np.complex64)
POS = np.full((3, 2), 8.0, np.float32)


@pytest.mark.parametrize(
    ("positions", "text"),
    [
        (np.zeros((3, 2, 4), np.float32), r"positions.shape=\(3, 2, 4\)"),
        (np.zeros((5, 3), np.float32), r"positions.shape=\(5, 3\)"),
        (np.zeros((2, 1, 3, 4), np.float32), r"positions.shape=\(2, 1, 3, 4\)"),
        (np.zeros(4, np.float32), r"positions.shape=\(4,\)"),
    ],
)
def test_positions_of_wrong_shape(positions, text):
    for call in (
        lambda: PatchExtractionLayer(4)(OBJ, positions),
        lambda: extract_patches(OBJ, positions, 4),
    ):
        with pytest.raises(
            ValueError, match=r"`positions` must have shape \(B, 1, 2, c\) or \(P, 2\)"
        ) as info:
            call()
        assert info.match(text)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(bad):
    positions = POS.copy()
    positions[1, 0] = bad
    with pytest.raises(ValueError, match="`positions` must be finite"):
        PatchExtractionLayer(4)(OBJ, positions)


def test_positions_of_wrong_type():
    with pytest.raises(
        TypeError,
        match=r"`positions` must be a real number tensor. Received: positions.dtype=string",
    ):
        extract_patches(OBJ, [["a", "b"]], 4)
    with pytest.raises(TypeError, match="Received: positions of type object"):
        extract_patches(OBJ, object(), 4)


@pytest.mark.parametrize(
    ("obj", "error", "text"),
    [
        (np.ones((16, 16), np.int32), TypeError, "obj.dtype=int32"),
        (np.ones((2, 16, 16)), ValueError, r"obj.shape=\(2, 16, 16\)"),
        (np.ones((1, 16, 16, 2)), ValueError, r"obj.shape=\(1, 16, 16, 2\)"),
        (np.ones(16), ValueError, r"obj.shape=\(16,\)"),
        (np.ones((0, 16)), ValueError, r"must not be empty. Received: obj.shape=\(0, 16\)"),
    ],
)
def test_bad_objects(obj, error, text):
    with pytest.raises(error, match=text):
        PatchExtractionLayer(4)(obj, POS)


def test_per_sample_objects_must_match_the_batch():
    objs = np.ones((2, 16, 16, 1), np.complex64)
    with pytest.raises(ValueError, match=r"same batch size. Received: obj.shape=\(2, 16, 16, 1\)"):
        extract_patches(objs, POS, 4)


@pytest.mark.parametrize(
    ("N", "error"),
    [
        (0, ValueError),
        (-3, ValueError),
        (2.5, TypeError),
        ("8", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_patch_size(N, error):
    with pytest.raises(error, match=f"`N` must be a positive int. Received: N={N!r}"):
        PatchExtractionLayer(N)
    with pytest.raises(error, match="`N` must be a positive int"):
        extract_patches(OBJ, POS, N)


@pytest.mark.parametrize("interpolation", ["cubic", "Bilinear", None])
def test_unknown_interpolation(interpolation):
    with pytest.raises(ValueError, match=f"Received: interpolation={interpolation!r}"):
        PatchExtractionLayer(4, interpolation=interpolation)
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        tf_helper.translate(OBJ[None, :, :, None], [[0.0, 0.0]], interpolation)


def _padded(N=8):
    return tf_helper.pad(tf.constant(OBJ[None, :, :, None]), N // 2)


@pytest.mark.parametrize(
    "function", [raw_data._get_image_patches_batched, raw_data._get_image_patches_iterative]
)
def test_batch_times_channels_must_match_offsets(function):
    offsets = np.zeros((6, 1, 2, 1), np.float32)
    with pytest.raises(
        ValueError,
        match=r"B \* c = 8 offsets \(B=2, c=4\). Received: offsets_f.shape=\(6, 1, 2, 1\)",
    ):
        function(_padded(), offsets, 8, 2, 4)
    with pytest.raises(ValueError, match=r"offsets_f.shape=\(6, 2\)"):
        function(_padded(), np.zeros((6, 2)), 8, 3, 2)
    with pytest.raises(ValueError, match=r"gt_padded.shape=\(24, 24\)"):
        function(np.ones((24, 24)), offsets, 8, 3, 2)


def test_gridsize_must_match_channels():
    offsets = np.zeros((2, 1, 2, 1), np.float32)
    with pytest.raises(
        ValueError,
        match=r"gridsize\*\*2 = 4 channels. Received: local_offsets.shape=\(2, 1, 2, 9\)",
    ):
        raw_data.get_image_patches(OBJ, offsets, np.zeros((2, 1, 2, 9)), N=4, gridsize=2)


@pytest.mark.parametrize(
    ("global_shape", "local_shape", "text"),
    [
        ((3, 1, 2, 1), (2, 1, 2, 4), r"global_offsets.shape=\(3, 1, 2, 1\)"),
        ((2, 1, 2, 2), (2, 1, 2, 4), r"global_offsets.shape=\(2, 1, 2, 2\)"),
        ((2, 2, 1), (2, 1, 2, 4), r"global_offsets.shape=\(2, 2, 1\)"),
    ],
)
def test_global_and_local_offsets_must_match(global_shape, local_shape, text):
    with pytest.raises(ValueError, match=text):
        raw_data.get_image_patches(
            OBJ, np.zeros(global_shape), np.zeros(local_shape), N=4, gridsize=2
        )


def test_translate_offsets_must_match_images():
    with pytest.raises(
        ValueError, match=r"one row per image. Received: imgs.shape=\(2, 16, 16, 1\)"
    ):
        tf_helper.translate(np.ones((2, 16, 16, 1)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"offsets.shape=\(2,\)"):
        tf_helper.translate(np.ones((1, 16, 16, 1)), np.zeros(2))
    with pytest.raises(ValueError, match=r"imgs.shape=\(16, 16\)"):
        tf_helper.pad(np.ones((16, 16)), 2)
    with pytest.raises(ValueError, match="size=-1"):
        tf_helper.pad(np.ones((1, 16, 16, 1)), -1)


def test_helper_argument_types():
    assert tf_helper.pad(np.ones((1, 4, 4, 1)), np.int64(2)).shape == (1, 8, 8, 1)
    with pytest.raises(TypeError, match=r"size=2\.0"):
        tf_helper.pad(np.ones((1, 4, 4, 1)), 2.0)
    with pytest.raises(TypeError, match=r"offsets\.dtype=uint8"):
        tf_helper.translate(np.ones((1, 4, 4, 1)), np.ones((1, 2), np.uint8))
    with pytest.raises(ValueError, match=r"N=16. Received: img.shape=\(4, 32, 32, 1\)"):
        tf_helper._flat_to_channel(np.ones((4, 32, 32, 1)), N=16, gridsize=2)
