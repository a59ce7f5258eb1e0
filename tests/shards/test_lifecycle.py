"""make-shards' processes end when they should: a worker whose masked-LM process died exits although a
request it sent is still unread (requests larger than a pipe's buffer, as a real chunk's are), a child
ends with its parent even when the parent is SIGKILLed (no orphan holding a GPU), and every worker's
BLAS pool is the size the run gives it."""

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from openclip_ce.shards.config import config_for
from openclip_ce.shards.fill_server import FillLinks, exit_with_parent
from openclip_ce.shards.process import FillerDied
from openclip_ce.shards.setup import run_setup

BIG = 400_000  # int64s: 3.2 MB per request, far over a pipe's 64 KiB (a 512-caption chunk is ~114 KB)


def _server_that_hangs(requests):
    requests.get()  # takes one request, then "computes" until it is killed
    time.sleep(300)


def _worker(links, said):
    link = links.link(0)
    first = link.send(np.zeros(BIG, dtype=np.int64))
    link.send(np.zeros(BIG, dtype=np.int64))  # never read: its server is about to die
    try:
        link.receive(first)
    except FillerDied:
        said.put("FillerDied")


def test_a_worker_with_unread_requests_exits_when_its_filler_process_dies():
    ctx = mp.get_context("spawn")
    requests, replies, abort, said = ctx.Queue(maxsize=4), [ctx.Queue()], ctx.Event(), ctx.Queue()
    server = ctx.Process(target=_server_that_hangs, args=(requests,), daemon=True)
    server.start()
    worker = ctx.Process(target=_worker, args=(FillLinks([requests], replies, abort), said))
    worker.start()
    time.sleep(3)
    server.kill()
    server.join()
    abort.set()  # what FillServers.check() does when it finds the process dead
    worker.join(20)
    alive = worker.is_alive()
    if alive:
        worker.kill()
    assert not alive, "the worker hung at exit on a request its dead filler process never read"
    assert worker.exitcode == 0 and said.get(timeout=5) == "FillerDied"


def _grandchild():
    exit_with_parent()
    time.sleep(300)


def _child(pids):
    grandchild = mp.get_context("spawn").Process(target=_grandchild, daemon=True)
    grandchild.start()
    pids.put(grandchild.pid)
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)  # daemon=True cannot clean up after this


def _gone(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie (re-parented, not yet reaped) has ended too
        return f.read().split(")")[-1].split()[0] == "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_child_process_ends_when_its_parent_is_killed():
    ctx = mp.get_context("spawn")
    pids = ctx.Queue()
    child = ctx.Process(target=_child, args=(pids,))
    child.start()
    grandchild = pids.get(timeout=60)
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not _gone(grandchild):
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("an orphaned child process outlived its SIGKILLed parent")


def _blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})


def test_each_worker_gets_the_blas_threads_the_run_gives_it(tmp_path):
    from openclip_ce.shards import local

    import concurrent.futures as cf

    cfg = config_for(["x.tar"], str(tmp_path / "out"), threads=1)
    setup = run_setup(cfg, [], 1, {"ops": "blis", "chosen_by": "--tagging-ops"})
    ctx = mp.get_context("spawn")
    queue, slots = ctx.Queue(), ctx.Queue()
    slots.put((0, "cpu"))
    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=local._worker_init,
                                initargs=(setup, queue, slots, None)) as ex:
        threads = ex.submit(_blas_threads).result(timeout=120)
    assert threads == [1], threads  # numpy's pool, started before the initializer ran, resized
