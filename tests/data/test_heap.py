"""bound_heap_growth: freed large blocks go back to the system instead of staying resident."""

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from unifashion.data.heap import bound_heap_growth

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "bounded":
        assert bound_heap_growth()
    big = bytearray(8 * 2**20)  # freeing a mapped 8 MB block raises glibc's threshold to 8 MB
    del big
    blocks = [bytearray(2**20) for _ in range(120)]  # 1 MB each, touched (zero-filled)
    before = rss_mb()
    del blocks[::2]  # every other one: holes in the heap, nothing at its top to trim
    print(before - rss_mb())
""")


def _released_mb(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_leave_the_process_only_with_the_bound():
    assert _released_mb("bounded") > 50  # 60 blocks of 1 MB freed and unmapped
    assert _released_mb("default") < 10  # the same frees kept resident: the growth the bound prevents
