"""Random decoder batches: prompt then response per packed segment, padding at the end."""

import numpy as np


def random_batch(rng: np.random.Generator, b=3, t=12, v=7, max_segments=3):
    """Rows packed with 1..max_segments examples, each a prompt (mask 0) then a response (mask 1)."""
    targets = rng.integers(0, v, (b, t)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    segments = np.zeros((b, t), np.int32)
    for row in range(b):
        pos = 0
        for seg in range(1, rng.integers(1, max_segments + 1) + 1):
            length = int(rng.integers(2, 6))
            if pos + length > t:
                break
            prompt = int(rng.integers(0, length))  # 0: the response starts the segment
            segments[row, pos : pos + length] = seg
            mask[row, pos + prompt : pos + length] = 1.0
            pos += length
        if row == 0 and pos < t:  # a response cut by the end of the row: c_{T-1} = 0 matters
            segments[row, pos:] = seg + 1
            mask[row, pos:] = 1.0
    logits = rng.normal(size=(b, t, v)).astype(np.float32) * 2.0
    return logits, {"targets": targets, "loss_mask": mask, "segment_ids": segments}


def on_logits(objective):
    """objective as a function of full logits, through the reference head (jirl.losses.head.from_logits):
    fn(logits, batch[, policy_logits=, policy_batch=]) -> (loss, metrics)."""
    from jirl.losses import head

    def fn(logits, batch, *, policy_logits=None, policy_batch=None):
        stats = lambda z, b: head.from_logits(z, b, mean_logit=objective.needs_mean_logit)  # noqa: E731
        if policy_logits is None and policy_batch is None:
            return objective(stats(logits, batch), batch)
        policy = head.Stream(stats(policy_logits, policy_batch), policy_batch)
        return objective(stats(logits, batch), batch, policy=policy)

    return fn
