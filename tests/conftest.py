"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a small shared machine, two threads fighting over tiny tensors are slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
