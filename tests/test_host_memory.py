"""The allocator setting that lets a CPU step reuse its buffers instead of faulting them in."""

import subprocess
import sys

import pytest

from jirl import host_memory

# A process that runs a jitted function with a 256 MiB temporary buffer (glibc would mmap it) and
# prints the minor page faults of each of its last runs.
FAULTS = """
import resource, sys
from jirl import host_memory
if sys.argv[1] == "reuse":
    assert host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x * 2.0, axis=0) ** 2))
x = jnp.ones((8192, 8192), jnp.float32)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[3:]))
"""


def _faults(mode: str) -> int:
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_reused_memory_spares_the_page_faults_of_every_step():
    assert host_memory.reuse_freed_memory() is True  # glibc here; once per process, cached
    assert host_memory.reuse_freed_memory() is True
    default, reused = _faults("default"), _faults("reuse")
    assert default > 32_000  # every run faults in most of a 256 MiB buffer (4 KiB pages) ...
    assert reused < default / 10  # ... unless freed memory is kept (the best of 5 steady runs)
