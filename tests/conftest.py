import pytest
import torch


@pytest.fixture(autouse=True)
def _small_threads():
    # tests use tiny tensors: thread start-up costs more than it saves
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def bench_script(monkeypatch):
    """Load a script of benchmarks/ as a module (they are not part of the package); as
    when run, benchmarks/ is on sys.path so that they import each other."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        path = folder / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load
