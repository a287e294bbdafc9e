"""keep_freed_memory: repeated large allocations stop faulting pages in again."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from alexnet.engine.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory() and keep_freed_memory()
    def faults_of_one_round():  # what a training step does to its activation tensors
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB, above glibc's largest mmap threshold
        x.fill_(1)
        del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(*[faults_of_one_round() for _ in range(16)])
""")


def faults(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    default, keep = faults("default"), faults("keep")
    assert min(default[-4:]) > pages // 2  # glibc unmaps it and every round faults each page in again
    assert max(keep[-4:]) < pages // 20  # the heap reaches a steady state whose pages stay resident
