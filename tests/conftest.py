import pytest
import torch


@pytest.fixture(autouse=True)
def _small_threads():
    # tests use tiny tensors: thread start-up costs more than it saves
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
