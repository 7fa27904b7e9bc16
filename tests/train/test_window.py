"""The logging window: sums over its steps, rates over its time, empty again after a flush."""

import numpy as np
import pytest

from jirl.train.window import LogWindow


def test_a_window_sums_its_steps_and_starts_anew(monkeypatch):
    clock = iter([0.0, 2.0, 2.0])
    monkeypatch.setattr("jirl.train.window.time.perf_counter", lambda: next(clock))
    window = LogWindow(process_count=2)
    for segments in ([[1, 1, 0, 0]], [[1, 2, 2, 0]]):
        window.add_data(dict(examples=2.0, truncated=1.0))
        window.add_tokens({"segment_ids": np.array(segments)})
    window.add_sampling(dict(sample_tokens=30.0, sample_seconds=0.5))
    window.add_sampling(dict(sample_tokens=10.0, sample_seconds=0.5))
    record = window.flush({"loss": 1.5})
    assert record["loss"] == 1.5
    assert record["tokens_per_sec"] == pytest.approx((2 + 3) * 2 / 2.0)  # both processes' share
    assert record["truncated_examples"] == 2.0 and record["truncated_fraction"] == 0.5
    assert record["sample_tokens"] == 40.0 and record["sample_tokens_per_sec"] == pytest.approx(40.0)
    assert (window.examples, window.truncated, window.tokens, window.sampling) == (0.0, 0.0, 0.0, {})


def test_restarting_the_clock_keeps_the_example_counts():
    window = LogWindow()
    window.add_data(dict(examples=4.0, truncated=1.0))
    window.add_tokens({"inputs": np.zeros((2, 3))})
    window.restart_clock()
    assert window.tokens == 0.0 and (window.examples, window.truncated) == (4.0, 1.0)
