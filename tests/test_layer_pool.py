"""Two target layers at a time: results in checkpoint order, errors at their turn, threads
split and restored, a Gram cache per thread."""

from __future__ import annotations

import threading

import pytest
import torch

from sclora_tools import layer_pool
from sclora_tools.core import subspace
from sclora_tools.errors import NumericalError
from sclora_tools.layer_pool import OrderedPool, threads_per_worker, worker_count


def test_results_come_back_in_submission_order_whatever_order_jobs_finish_in():
    second_done = threading.Event()
    first = lambda: second_done.wait(5) and "first"  # noqa: E731 - finishes only after the second
    second = lambda: second_done.set() or "second"  # noqa: E731
    out = []
    with OrderedPool(2) as pool:
        pool.submit("a", first)
        pool.put("b", "between")
        pool.submit("c", second)
        out += list(pool.ready())
        out += list(pool.ready(drain=True))
    assert out == [("a", "first"), ("b", "between"), ("c", "second")]


def test_no_more_than_workers_jobs_are_left_unfinished():
    release = threading.Event()
    with OrderedPool(2) as pool:
        pool.submit("a", lambda: "a")
        pool.submit("b", release.wait, 5)
        pool.submit("c", release.wait, 5)
        assert [key for key, _ in pool.ready()] == ["a"]  # three unfinished: the pool waits for the head
        assert pool.running == 2
        release.set()
        assert [key for key, _ in pool.ready(drain=True)] == ["b", "c"]


def test_a_jobs_error_is_raised_when_its_turn_comes():
    def fail():
        raise NumericalError("layer 1 holds NaN")

    with OrderedPool(2) as pool:
        pool.submit("ok", lambda: 1)
        pool.submit("bad", fail)
        with pytest.raises(NumericalError, match="layer 1"):
            list(pool.ready(drain=True))


def test_one_worker_runs_jobs_at_once_on_the_calling_thread():
    with OrderedPool(1) as pool:
        pool.submit("x", threading.get_ident)
        assert list(pool.ready()) == [("x", threading.get_ident())]


def test_layers_pair_up_only_on_two_threads_and_below_the_size_limit():
    small, large = 1536 * 576, layer_pool.PARALLEL_LAYER_BYTES // 8 + 1
    assert worker_count(small, threads=2) == 2
    assert worker_count(small, threads=1) == 1
    assert worker_count(large, threads=16) == 1


def test_threads_are_split_between_workers_and_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with threads_per_worker(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_each_thread_keeps_its_own_gram():
    weights = [torch.randn(9, 5, dtype=torch.float64) for _ in range(2)]
    grams, barrier = {}, threading.Barrier(2)

    def work(index: int) -> None:
        subspace.GRAMS.of(weights[index], torch.device("cpu"))
        barrier.wait()  # both caches filled before either reads back
        grams[index] = (subspace.GRAMS.holds(weights[index]), subspace.GRAMS.of(weights[index], torch.device("cpu")))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, weight in enumerate(weights):
        held, gram = grams[index]
        assert held  # one shared cache would hold only the last thread's weight
        torch.testing.assert_close(gram, weight.T @ weight)
