"""The device the training tests run on, chosen by SSL_AE_TEST_DEVICE: `cpu` (the default, whatever the machine has),
`cuda` or `cuda:N`. Tests that train read `DEVICE` from here, and `device="auto"` in a test resolves to it (conftest.py),
so one variable moves the whole suite to a GPU: `SSL_AE_TEST_DEVICE=cuda pytest tests` (tests/gpu_check.py does).

On a GPU, cuDNN's and cuBLAS's kernels are not bit-reproducible from run to run, so checks of equality between two runs
(exact resume) become checks of closeness there: `same(a, b)`."""
import os

import torch

DEVICE = os.environ.get("SSL_AE_TEST_DEVICE", "cpu").strip() or "cpu"
ON_GPU = DEVICE.startswith("cuda")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    "Equal on the CPU; on a GPU, equal up to 5 % of the larger magnitude (what run-to-run kernel differences leave after a few epochs)."
    if not ON_GPU or not a.is_floating_point(): return torch.equal(a, b)
    a, b = a.float(), b.float()
    return bool((a - b).abs().max() <= 0.05 * torch.maximum(a.abs().max(), b.abs().max()) + 1e-6) if a.numel() else True
