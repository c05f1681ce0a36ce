"""Tests of geocluster_dagster.blocks: block-wise passes over dask arrays."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from geocluster_dagster.blocks import iter_blocks


def counting_array(shape, chunks):
    """A dask array whose blocks record each computation in ``calls``."""
    calls, lock = [], threading.Lock()

    def produce(block, block_info=None):
        with lock:
            calls.append(tuple(block_info[None]["chunk-location"]))
        return block

    base = da.arange(np.prod(shape), dtype="float32").reshape(shape).rechunk(chunks)
    return base.map_blocks(produce, dtype="float32"), calls


@pytest.mark.parametrize("in_flight", [1, 3, 100])
def test_every_block_once_in_c_order_with_its_index(in_flight):
    array, calls = counting_array((2, 50, 70), (2, 20, 30))
    expected = array.compute()
    calls.clear()
    seen = []
    with dask.config.set(scheduler="threads"):
        for index, block in iter_blocks(array, in_flight=in_flight):
            np.testing.assert_array_equal(block, expected[index])
            seen.append((index[1].start, index[2].start))
    assert seen == sorted(seen)  # C order: rows of blocks, left to right
    assert len(seen) == 3 * 3 and sorted(calls) == sorted(set(calls)) and len(calls) == 9


def test_apply_runs_in_the_blocks_task_and_returns_several_results_from_one_read():
    array, calls = counting_array((1, 40, 40), (1, 16, 16))
    calls.clear()

    def label_and_sum(block):
        labels = (block[0] > 800).astype("uint8")
        return labels, np.bincount(labels.ravel(), minlength=2)

    totals = np.zeros(2, dtype=int)
    with dask.config.set(scheduler="threads"):
        for index, (labels, counts) in iter_blocks(array, apply=label_and_sum, in_flight=2):
            assert labels.shape == (index[1].stop - index[1].start, index[2].stop - index[2].start)
            totals += counts
    assert len(calls) == 9  # one read per block for both results
    assert totals.tolist() == [801, 1600 - 801]


def test_a_failing_block_raises_and_an_abandoned_pass_stops_computing():
    array, calls = counting_array((1, 64, 64), (1, 16, 16))
    calls.clear()
    with dask.config.set(scheduler="threads"):
        for _ in iter_blocks(array, in_flight=2):
            break  # the caller gives up after one block
    # The batch being handed over and the one prefetched, nothing after.
    assert len(calls) == 4

    def broken(block):
        if block[0, 0, 0] >= 16 * 64:
            raise ValueError("bad block")
        return block

    failing = array.map_blocks(broken, dtype="float32")
    seen = []
    with dask.config.set(scheduler="threads"), pytest.raises(ValueError, match="bad block"):
        for index, _ in iter_blocks(failing, in_flight=2):
            seen.append(index)
    assert len(seen) == 4  # the first row of blocks came through before the failure
