"""jirl.models.hf.layouts: each layout, HF shape and round trip, on small arrays."""

import numpy as np
import pytest

from jirl import models
from jirl.models.hf import layouts

CFG = models.get_config("tiny", num_heads=4, num_kv_heads=2, head_dim=8, embed_dim=32)
RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "names, shapes, layout, hf_shape",
    [
        (("wq",), [(32, 4, 8)], "linear", (32, 32)),  # torch's [out, in]
        (("wk",), [(32, 2, 8)], "linear", (16, 32)),
        (("wo",), [(4, 8, 32)], "linear", (32, 32)),  # two fan-in axes
        (("bq",), [(4, 8)], "vector", (32,)),
        (("embed",), [(97, 32)], "table", (97, 32)),
        (("wq", "wk", "wv"), [(32, 4, 8), (32, 2, 8), (32, 2, 8)], "conv1d", (32, 64)),  # GPT-2's [in, out]
        (("bq", "bk", "bv"), [(4, 8), (2, 8), (2, 8)], "vector", (64,)),
    ],
)
def test_a_tensor_goes_to_hugging_face_and_back(names, shapes, layout, hf_shape):
    arrays = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    theirs = layouts.from_jirl(arrays, names, layout)
    assert theirs.shape == hf_shape and theirs.dtype == np.float32 and theirs.flags.c_contiguous
    if len(names) == 1:
        assert layouts.hf_shape(names[0], shapes[0], layout) == hf_shape
    back = layouts.to_jirl(theirs, names, shapes, layout, CFG)
    for got, want in zip(back, arrays):
        np.testing.assert_array_equal(got, want)


def test_linear_is_the_transpose_of_torch_weights():
    w_torch = RNG.normal(size=(64, 32)).astype(np.float32)  # up_proj [mlp, D]
    (ours,) = layouts.to_jirl(w_torch, ("w_up",), [(32, 64)], "linear", CFG)
    x = RNG.normal(size=(3, 32)).astype(np.float32)
    np.testing.assert_allclose(x @ ours, x @ w_torch.T, rtol=1e-6)
