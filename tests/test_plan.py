"""`jirl plan`: slice names, per-device bytes on a fake CPU mesh, a TPU slice compiled ahead of time."""

import json
import os
import subprocess
import sys

import pytest

from jirl import cli, plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARITH = os.path.join(ROOT, "experiments", "arith.py")
GSM8K = os.path.join(ROOT, "experiments", "gsm8k.py")
TINY = [f"--config={ARITH}:iqlearn", "--config.model.preset=tiny", "--config.task.seq_len=64"]


def _plan(*args):
    chosen = [a for a in args if a.startswith(f"--config={GSM8K}")]
    if chosen:  # that experiment instead of arith, first (overrides follow the file)
        args = chosen + [a for a in args if not a.startswith(f"--config={ARITH}") and a not in chosen]
    env = {k: v for k, v in os.environ.items() if k != "TPU_ACCELERATOR_TYPE"}
    # The suite's compilation flags stay; `--devices` adds its own device count.
    flags = os.environ.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    return subprocess.run(
        [sys.executable, "-m", "jirl.cli", "plan", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, generation, grid, chips, slice_name",
    [
        ("v5e:4x4", "v5e", "4x4", 16, "v5litepod-16"),
        ("v5e-16", "v5e", "4x4", 16, "v5litepod-16"),
        ("v5litepod-64", "v5e", "8x8", 64, "v5litepod-64"),
        ("v5p-32", "v5p", "2x2x4", 16, "v5p-32"),
        ("v6e-64", "v6e", "8x8", 64, "v6e-64"),
        ("v4-32", "v4", "2x2x4", 16, "v4-32"),
        ("v5p:2x4x4", "v5p", "2x4x4", 32, "v5p-64"),
    ],
)
def test_topology_names(name, generation, grid, chips, slice_name):
    topology = plan.parse_topology(name)
    assert (topology.generation, topology.grid, topology.chips, topology.slice_name) == (
        generation,
        grid,
        chips,
        slice_name,
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("v5e", "unknown topology 'v5e'; give a TPU generation and chip grid like v5e:4x4"),
        ("v9x-16", "unknown TPU generation 'v9x'"),
        ("v5e-12", "has 12 chips; slices have a power of two"),
    ],
)
def test_bad_topology_names(name, message):
    with pytest.raises(ValueError, match=message):
        plan.parse_topology(name)


def _json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_plan_on_8_cpu_devices_splits_state_eight_ways():
    result = _plan(
        *TINY, "--devices=8", "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.train.batch_size=8"
    )
    assert result.returncode == 0, result.stderr
    assert "8 CPU devices: 8 x cpu, mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in result.stdout
    report = _json(result.stdout)
    # Every tiny parameter has an `embed` dimension (32, split 8 ways): exactly 1/8 per device.
    assert report["params_bytes"] * 8 == report["num_params"] * 4
    # Adam's mu and nu, its two int32 counts, and the two int32 counts of skipped steps.
    assert report["optimizer_bytes"] == 2 * report["params_bytes"] + 8 + 8
    assert report["temporary_bytes"] > 0 and report["total_bytes"] >= report["arguments_bytes"]
    assert "hbm_bytes" not in report  # a CPU has no HBM to check against unless --hbm_gib is given


def test_online_iqlearn_is_planned_with_its_policy_batch():
    """The online step reads an expert and a policy batch of one shape: more temporaries than offline."""
    reports = {}
    for objective in ("iqlearn", "iqlearn_online"):
        args = [a.replace(":iqlearn", f":{objective}") for a in TINY]
        budget = "--config.online.max_new_tokens=32"  # a prompt and its response fit seq_len 64
        result = _plan(*args, "--devices=2", "--config.train.batch_size=4", budget)
        assert result.returncode == 0, result.stderr
        reports[objective] = _json(result.stdout)
    offline, online = reports["iqlearn"], reports["iqlearn_online"]
    assert (offline["loss"], online["loss"]) == ("iqlearn", "iqlearn online")
    assert online["params_bytes"] == offline["params_bytes"]
    assert online["arguments_bytes"] > offline["arguments_bytes"]  # the policy batch
    assert online["temporary_bytes"] > offline["temporary_bytes"]


def test_a_lora_step_is_planned_with_its_base_as_an_input():
    """The adapters and their optimizer state are the state; the frozen base (bfloat16) an input."""
    lora = ["--config.model.lora.rank=4", "--config.model.lora.base_dtype=bfloat16"]
    result = _plan(*TINY, "--devices=2", "--config.train.batch_size=4", *lora)
    assert result.returncode == 0, result.stderr
    report = _json(result.stdout)
    assert (report["lora_rank"], report["lora_targets"], report["base_dtype"]) == (
        4,
        ["q_proj", "v_proj"],
        "bfloat16",
    )
    # tiny: 2 layers of A [32, 4] and B [4, 4, 8] (q), B [4, 2, 8] (v), replicated over the data axis
    assert report["trainable_params"] == 2 * (2 * 32 * 4 + 4 * 32 + 4 * 16)
    assert report["params_bytes"] == 4 * report["trainable_params"]
    assert report["optimizer_bytes"] == 2 * report["params_bytes"] + 8 + 8
    assert report["base_bytes"] == 2 * report["num_params"]
    assert (
        report["arguments_bytes"] >= report["base_bytes"] + report["params_bytes"] + report["optimizer_bytes"]
    )
    assert "frozen base" in result.stdout and "LoRA rank 4 on q_proj,v_proj" in result.stdout


def test_gail_is_planned_with_its_discriminator_and_starting_policy():
    args = [a.replace(":iqlearn", ":gail") for a in TINY]
    result = _plan(*args, "--devices=2", "--config.train.batch_size=4", "--config.loss.discriminator=tiny",
                   "--config.online.max_new_tokens=32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = _json(result.stdout)
    assert report["loss"] == "gail online"
    # pi_ref (the params' size) and a tiny discriminator with Adam's two moments, beside the policy
    assert report["discriminator_and_reference_bytes"] >= 4 * report["params_bytes"]
    assert report["arguments_bytes"] > report["params_bytes"] + report["optimizer_bytes"]


def test_plan_for_a_tpu_slice_ahead_of_time():
    result = _plan(*TINY, "--topology=v5e:2x2", "--config.train.batch_size=8")
    assert result.returncode == 0, result.stderr
    report = _json(result.stdout)
    assert report["devices"] == 4 and report["device_kind"].startswith("TPU v5")
    assert report["hbm_bytes"] == 16 * 1024**3 and report["fits"] is True
    assert "-> fits" in result.stdout
    tight = _plan(*TINY, "--topology=v5e:2x2", "--config.train.batch_size=8", "--hbm_gib=0.0001")
    assert tight.returncode == 0 and "does NOT fit" in tight.stdout and _json(tight.stdout)["fits"] is False


def test_a_step_the_tpu_compiler_refuses_is_reported_as_not_fitting():
    """Temporaries over HBM make XLA:TPU refuse to compile: a verdict, not a traceback."""
    result = _plan(*TINY, "--topology=v5e:2x2", "--config.train.batch_size=1048576")
    assert result.returncode == 0, result.stderr
    report = _json(result.stdout)
    assert report["fits"] is False and "RESOURCE_EXHAUSTED" in report["compiler_refused"]
    assert report["params_bytes"] > 0 and "does NOT fit: the compiler refused the step" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--devices=4", "--config.mesh.data=3"],
            "mesh data=3 x fsdp=1 x tensor=1 = 3 devices, but 4 are available",
        ),
        (
            ["--devices=4", "--config.train.batch_size=6"],
            "train.batch_size=6 is not divisible by the data-parallel",
        ),
    ],
)
def test_bad_plans_are_one_line(args, message):
    """The command itself, with the CPU devices it makes (`--devices`) before jax loads."""
    result = _plan(*TINY, *args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("jirl: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topology=v7q-8"], "unknown TPU generation 'v7q'"),
        (["--devices=2", "--topology=v5e:2x2"], "give one of --topology or --devices"),
        (
            ["--devices=1", f"--config={GSM8K}:mle"],
            "model.vocab_size=-1 (the tokenizer's) needs the tokenizer; give the vocabulary size",
        ),
        (
            ["--devices=1", "--config.model.vocab_size=8"],
            "override --config.model.vocab_size: the experiment",
        ),
    ],
)
def test_bad_plan_input_is_one_line_in_process(args, message, monkeypatch, capsys):
    """Refused before anything compiles: `cli.main` in this process (`--devices` edits XLA_FLAGS,
    restored after)."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    chosen = [a for a in args if a.startswith(f"--config={GSM8K}")]
    config = chosen or TINY[:1]
    assert cli.main(["plan", *config, *TINY[1:], *[a for a in args if a not in chosen]]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jirl: error:")]
    assert len(errors) == 1 and message in errors[0], errors
