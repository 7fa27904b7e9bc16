"""Host-side batch checks: a missing key, a shape that differs and a token id outside the vocabulary
are each named."""

import numpy as np
import pytest

from jirl.train.batch_check import check_batch


def _batch(b=2, t=16, vocab=259, seed=0):
    tokens = np.random.default_rng(seed).integers(3, vocab, (b, t + 1)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 2 :] = 1
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}


def test_bad_batches_name_the_problem():
    batch = _batch()
    check_batch(batch, 259)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['loss_mask'\]"):
        check_batch({k: v for k, v in batch.items() if k != "loss_mask"}, 259)
    with pytest.raises(ValueError, match="token id 300, outside the model vocabulary \\[0, 259\\)"):
        check_batch(dict(batch, targets=np.full_like(batch["targets"], 300)), 259)
    with pytest.raises(ValueError, match="token id -1"):
        check_batch(dict(batch, inputs=np.full_like(batch["inputs"], -1)), 259)
    with pytest.raises(ValueError, match=r"batch\['loss_mask'\] has shape \(2, 15\)"):
        check_batch(dict(batch, loss_mask=batch["loss_mask"][:, 1:]), 259)
