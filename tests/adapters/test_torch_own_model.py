"""compress(..., in_place=True): a resized deep copy of the user's own module, and load_compressed."""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from tests.torch_resnets import randomise_batchnorm, resnet18  # noqa: E402
from tropref.adapters.torch import compress, load_compressed  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.pool, self.fc1, self.fc2 = nn.MaxPool2d(2), nn.Linear(256, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = self.pool(torch.relu(self.bn2(self.c2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("make", "shape"), [(Net, (3, 8, 8)), (lambda: resnet18(width=8, num_classes=5), (3, 32, 32))])
def test_own_module_resized_in_place_and_reloaded(make, shape, dtype):
    torch.manual_seed(0)
    model = randomise_batchnorm(make()).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, *shape, dtype=dtype)
    small, report = compress(model, 0.5, inputs=x, progress=False, in_place=True)
    assert type(small) is type(model)
    assert report.notes == ()
    assert list(small.state_dict()) == list(model.state_dict())
    assert any(small.state_dict()[k].shape != v.shape for k, v in before.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # input untouched
    rebuilt, _ = compress(model, 0.5, inputs=x, progress=False)  # the tropref network written back
    buf = io.BytesIO()
    torch.save(small.state_dict(), buf)
    buf.seek(0)
    again = load_compressed(make().to(dtype), torch.load(buf, weights_only=True))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    with torch.no_grad():
        assert torch.allclose(small(x), rebuilt(x), atol=tol, rtol=tol)
        assert torch.equal(again(x), small(x))


def test_batchnorm_after_relu_keeps_its_own_eps_exactly():
    # the compression refits a BatchNorm after a ReLU with eps 0; the module keeps its own eps
    torch.manual_seed(0)
    # (a zero-padded convolution reads it, so it cannot fold into that convolution)
    layers = [nn.Conv2d(2, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU()]
    model = randomise_batchnorm(nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 3))).double()
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    small, report = compress(model, 0.5, inputs=x, progress=False, in_place=True)
    rebuilt, _ = compress(model, 0.5, inputs=x, progress=False)
    assert report.notes == ()  # resized in place, no fallback
    assert small[2].eps == model[2].eps
    with torch.no_grad():
        assert torch.allclose(small(x), rebuilt(x), atol=1e-12, rtol=1e-12)


def test_kept_batchnorm_holds_the_merged_units_statistics():
    """In training mode a BatchNorm normalises by the batch and restores its affine part:
    the kept ``bn1`` restores the compressed units' estimated mean and spread (not 0 and 1),
    and in eval mode it still computes the compressed network."""
    torch.manual_seed(0)
    model = randomise_batchnorm(Net()).eval()
    x = torch.randn(8, 3, 8, 8)
    small, report = compress(model, 0.5, inputs=x, progress=False, in_place=True)
    (c1,) = [r for r in report.layers if r.name == "c1"]
    mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in c1.info["moments"])
    bn = small.bn1
    assert torch.allclose(bn.running_var, std**2)
    assert torch.allclose(bn.weight, torch.sqrt(std**2 + bn.eps))
    assert torch.allclose(bn.bias, mean)
    # c1 has no bias of its own: the folded bias b moves to the BatchNorm, whose running mean
    # is that of c1's output without it, mean - b
    assert not torch.allclose(bn.running_mean, mean)
    rebuilt, _ = compress(model, 0.5, inputs=x, progress=False)
    with torch.no_grad():
        assert torch.allclose(small(x), rebuilt(x), atol=1e-4, rtol=1e-4)
