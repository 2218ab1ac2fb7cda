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


def test_live_peak_counts_every_storage_once_until_freed():
    from locallearn.measure import LivePeak

    base = torch.zeros(256)  # 1 KiB that exists before the region
    with LivePeak("cpu", [base, base[:10]]) as lp:  # a view of it counts once
        assert lp.current == 1024
        a = torch.ones(512)           # +2 KiB
        b = a[:100] * 2               # +400 B (new storage), the view itself is free
        del a                         # -2 KiB
        c = torch.ones(128)           # +512 B
        assert lp.current == 1024 + 400 + 512
    assert lp.peak == 1024 + 2048 + 400
    del b, c


def test_live_peak_sees_recomputation_that_the_saved_tensor_meter_misses():
    """--recompute: checkpoint re-runs the bridge copies in backward, out of the meter's
    sight; the live peak still counts them, so it shows a smaller saving."""
    from locallearn.measure import live_peak
    from locallearn.optim import BlockOptimizers
    from locallearn.config import TrainConfig

    x, y = torch.randn(16, 1, 24, 24), torch.randint(0, 10, (16,))
    rows = {}
    for rec in (False, True):
        torch.manual_seed(0)
        net = LocalNet(create_model("resnet20", num_classes=10, in_chans=1), 9, "greedy+manpp",
                       image_size=(24, 24), mean=[0.5], std=[0.25], recompute=rec)
        opt = BlockOptimizers(net, TrainConfig())
        meter = measure_step_memory(net, x, y, after_block=opt.after_block)
        live = live_peak(lambda: net.train_step(x, y, after_block=opt.after_block), "cpu",
                         [*net.parameters(), *net.buffers(), *opt.state_tensors(), x, y])
        rows[rec] = meter, live
    (m0, l0), (m1, l1) = rows[False], rows[True]
    assert m1.activation_bytes < m0.activation_bytes and l1 < l0  # recompute saves memory
    # the meter alone overstates that saving: it misses the re-run copies
    assert l0 - l1 < 0.9 * (m0.activation_bytes - m1.activation_bytes)
    assert abs(l0 - m0.total) < 0.25 * m0.total  # without recompute the two agree roughly


def test_component_profile_charges_every_flop_and_second_to_a_part():
    from locallearn.config import TrainConfig
    from locallearn.measure.components import OPTIM, component_profile
    from locallearn.measure.flops import step_flops
    from locallearn.optim import BlockOptimizers

    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    parts = {}
    for method, k in (("e2e", 1), ("infopro+manpp", 4)):
        net = _net(k, method)
        total = step_flops(net, x, y) / 1e9
        net.zero_grad(set_to_none=True)
        parts[method] = component_profile(net, BlockOptimizers(net, TrainConfig()), x, y, warmup=1)
        assert abs(sum(p.gflop for p in parts[method].values()) - total) < 1e-6 * max(total, 1)
        assert all(p.seconds >= 0 for p in parts[method].values())
    # E2E: every FLOP is the backbone's
    assert parts["e2e"]["backbone units"].gflop > 0
    assert sum(p.gflop for n, p in parts["e2e"].items() if n != "backbone units") == 0
    loc = parts["infopro+manpp"]
    assert {"EMA copy", "learnable copy", "MAN++ mix", "head: decoder", "head: classifier",
            OPTIM} <= set(loc)
    # the frozen EMA copy computes no weight gradients: fewer FLOPs than the learnable one
    assert 0 < loc["EMA copy"].gflop < loc["learnable copy"].gflop
    assert loc["MAN++ mix"].gflop == 0 and loc["MAN++ mix"].seconds > 0


def test_cuda_crosscheck_section_judges_each_row_against_max_memory_allocated(bench_script):
    """The GPU cross-check's table (benchmarks/crosscheck_memory.py --device cuda) from
    bench rows: the signed difference and the 15% verdict per row."""
    mod = bench_script("crosscheck_memory")
    mb = 2 ** 20
    rows = [dict(model="resnet32", method="e2e", blocks=1, peak_bytes=110 * mb, cuda_peak_bytes=100 * mb),
            dict(model="resnet32", method="dgl+manpp", blocks=16, peak_bytes=80 * mb,
                 cuda_peak_bytes=100 * mb)]
    text = mod.cuda_section(rows, {"torch": "x"}, "2026-11-25", "cmd")
    lines = [ln for ln in text.splitlines() if ln.startswith("| resnet32")]
    assert lines[0].endswith("| 110.0 | 100.0 | +10.0% | yes |")
    assert lines[1].endswith("| 80.0 | 100.0 | -20.0% | **no** |")
