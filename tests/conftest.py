from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Test tensors are tiny: intra-op threads only add overhead (and stall on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """``tiny`` U-Net runs at 16x16 for each objective (:func:`helpers.train_tiny`); tests only read them."""
    from helpers import train_tiny

    root = tmp_path_factory.mktemp("runs")
    return {objective: train_tiny(root / objective, objective) for objective in ("eps", "conditional", "denoiser")}


@pytest.fixture(scope="session")
def eps(runs):
    """The EPS run of ``runs``, loaded on the CPU."""
    from exactps.loading import load_model

    return load_model(runs["eps"], device="cpu")
