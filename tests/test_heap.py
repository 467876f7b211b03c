"""The C heap's choice (`runtime.heap`), in processes of their own: made first, freed memory is reused
by every thread; made once threads have their arenas, their large blocks still come and go."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sami_gateway.cli import main as cli

PROGRAM = textwrap.dedent("""
    import ctypes, sys, threading
    from sami_gateway.runtime import heap

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 200 * 1024 * 1024
    first = sys.argv[1] == "first"
    if first:
        heap.retain_freed_memory()
    chosen = threading.Event()

    def inference():  # a long-lived thread, as the scheduler's, started with the app
        libc.free(libc.malloc(64))  # its arena, from its first allocation
        chosen.wait()
        before = rss_mib()
        block = libc.malloc(size)  # a block as large as a forward pass's activations, touched, freed
        ctypes.memset(block, 1, size)
        held = rss_mib()
        libc.free(block)
        print(before, held, rss_mib())

    thread = threading.Thread(target=inference)
    thread.start()
    if not first:
        heap.retain_freed_memory()
    chosen.set()
    thread.join()
""")


def rss_after(when: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, when], check=True, capture_output=True, text=True,
                         timeout=60).stdout.split()
    before, held, after = (int(value) for value in out)
    return before, held, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_every_thread_only_when_chosen_first() -> None:
    before, held, after = rss_after("first")
    assert held - before > 150 and after - before > 150  # the 200 MiB block kept once freed, for reuse
    before, held, after = rss_after("late")
    assert held - before > 150 and after - before < 50  # the thread's arena mapped it apart, and unmapped it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2)")
def test_the_choice_keeps_khugepaged_off_the_process() -> None:
    """A kept heap is what khugepaged would collapse under the event loop: the process opts out of huge
    pages (PR_GET_THP_DISABLE says so), only when the heap is chosen."""
    program = ("import ctypes, sys\n"
               "from sami_gateway.runtime import heap\n"
               # a process started with huge pages allowed (the setting is inherited: this test's own
               # process may have made the choice in another test)
               "ctypes.CDLL('libc.so.6').prctl(41, 0, 0, 0, 0)\n"  # PR_SET_THP_DISABLE
               "if sys.argv[1] == 'chosen':\n"
               "    assert heap.retain_freed_memory()\n"
               "print(ctypes.CDLL('libc.so.6').prctl(42, 0, 0, 0, 0))\n")  # PR_GET_THP_DISABLE
    answers = [subprocess.run([sys.executable, "-c", program, when], check=True, capture_output=True, text=True,
                              timeout=60).stdout.strip() for when in ("chosen", "not")]
    assert answers == ["1", "0"]


def test_serve_makes_the_heap_choice_before_the_app_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from sami_gateway import app as app_module
    from sami_gateway.runtime import heap

    order: list[str] = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda: order.append("heap") or True)

    def built(config: object) -> None:
        order.append("app")
        raise SystemExit(0)
    monkeypatch.setattr(app_module, "create_app", built)
    monkeypatch.setenv("SAMI_TOKEN_SECRET", "a-secret-long-enough-for-the-gateway-0123456789")
    with pytest.raises(SystemExit):
        cli.main(["serve"])
    assert order == ["heap", "app"]
    order.clear()
    monkeypatch.setenv("SAMI_RETAIN_FREED_MEMORY", "false")
    with pytest.raises(SystemExit):
        cli.main(["serve"])
    assert order == ["app"]
