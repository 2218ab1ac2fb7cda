import torch

from locallearn import LocalNet, create_model
from locallearn.measure import ActivationMeter, measure_step_memory


def test_meter_counts_saved_storages_once_and_frees_them():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8)
    meter = ActivationMeter(exclude=[w])
    with meter.hooks():
        h = x @ w                 # saves x (128 B) and w (excluded)
        y = h.exp()               # saves its output (128 B)
        z = (y[:2] * y[2:]).sum()  # saves two views of y's storage: counted once
    assert meter.peak == 4 * 8 * 4 * 2
    z.backward()
    del h, y, z
    assert meter.current == 0


def _net(k, method):
    torch.manual_seed(0)
    return LocalNet(create_model("resnet20", num_classes=10, in_chans=1), k, method,
                    image_size=(16, 16), mean=[0.5], std=[0.25])


def test_local_blocks_save_less_than_e2e():
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    e2e = measure_step_memory(_net(1, "e2e"), x, y)
    local = measure_step_memory(_net(10, "greedy"), x, y)
    assert local.activation_bytes < 0.4 * e2e.activation_bytes
    assert e2e.param_bytes == sum(p.numel() * 4 for p in _net(1, "e2e").parameters()) + \
        sum(b.numel() * b.element_size() for b in _net(1, "e2e").buffers())
    manpp = measure_step_memory(_net(10, "greedy+manpp"), x, y)
    assert manpp.grad_bytes > local.grad_bytes  # the learnable copies train too
    assert manpp.total == manpp.param_bytes + manpp.grad_bytes + manpp.optim_bytes + \
        manpp.activation_bytes
