"""Metrics files: one record per logged step; a write that fails is one line naming the file."""

import os
import subprocess
import sys

import pytest

from jirl.errors import WriteFailed
from jirl.train.metrics_writer import MetricsWriter, read_metrics, write_text


def test_records_append_and_a_restart_drops_the_steps_it_will_log_again(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    for step in (1, 2, 3):
        writer.write(step, {"loss": float(step)})
    writer.close()
    MetricsWriter(str(tmp_path), tensorboard=False, start_step=3).close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2]


def test_a_failed_write_names_the_file_and_the_cause(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    os.mkdir(writer.path)  # appending to it now fails, as a full or read-only disk would
    with pytest.raises(WriteFailed, match=rf"writing {writer.path} failed: Is a directory; the checkpoints"):
        writer.write(1, {"loss": 1.0})
    with pytest.raises(WriteFailed, match="writing .*summary.json failed: No such file or directory"):
        write_text(str(tmp_path / "missing" / "summary.json"), "{}")


# A fresh process: in this one another test may have imported torch already.
TENSORBOARD_WITHOUT_TORCH = """
import importlib.util, os, sys
from jirl.train.metrics_writer import MetricsWriter
writer = MetricsWriter(sys.argv[1])
writer.write(1, {"loss": 0.5})
writer.close()
assert "torch" not in sys.modules, "tensorboardX brought torch in"
assert os.listdir(os.path.join(sys.argv[1], "tensorboard")), "no event file"
if importlib.util.find_spec("torch") is not None:
    import torch  # still importable afterwards
    assert float(torch.ones(2).sum()) == 2.0
print("ok")
"""


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
    """tensorboardX imports torch whenever it is installed (seconds at every start); jirl hides it."""
    out = subprocess.run(
        [sys.executable, "-c", TENSORBOARD_WITHOUT_TORCH, str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
