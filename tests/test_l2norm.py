import pytest
import torch
import torch.nn.functional as F

from parsenet.models import L2Norm


def test_matches_normalize_times_scale():
    torch.manual_seed(0)
    layer = L2Norm(6, scale=10.0)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(1.0, 12.0, 6))
    x = torch.randn(2, 6, 5, 7)
    expected = F.normalize(x, dim=1) * layer.weight.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_eps_is_inside_the_square_root():
    layer = L2Norm(3, scale=1.0, eps=1e-2)
    x = torch.tensor([3.0, 4.0, 0.0]).view(1, 3, 1, 1)
    expected = x / torch.sqrt(torch.tensor(25.0 + 1e-2))
    torch.testing.assert_close(layer(x), expected)
    assert torch.all(L2Norm(3)(torch.zeros(1, 3, 2, 2)) == 0)


def test_gradcheck_float64():
    torch.manual_seed(0)
    layer = L2Norm(4, scale=3.0).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


def test_scale_options():
    shared = L2Norm(8, scale=20.0, channel_shared=True)
    assert shared.weight.shape == (1,)
    fixed = L2Norm(8, scale=20.0, learn_scale=False)
    assert not list(fixed.parameters()) and fixed.weight.shape == (8,)
    x = torch.randn(1, 8, 2, 2)
    torch.testing.assert_close(shared(x), fixed(x))


@pytest.mark.parametrize("autocast", [False, True])
def test_norm_computed_in_float32_under_autocast(autocast):
    """Squares of ~1e-4 underflow to 0 in float16, so a float16 norm divides by 0 (inf);
    computed in float32 the output is finite and matches float64."""
    layer = L2Norm(4, scale=10.0)
    x = torch.tensor([0.6e-4, 0.9e-4, 1.1e-4, 1.4e-4], dtype=torch.float16).view(1, 4, 1, 1)
    assert torch.all(x.pow(2) == 0)  # what defeats a half-precision norm
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        y = layer(x)
    assert y.dtype == torch.float16
    wide = x.double()
    expected = wide / torch.sqrt(wide.pow(2).sum(dim=1, keepdim=True) + layer.eps) * 10.0
    assert torch.isfinite(y).all()
    # rtol 1e-3: float16 rounding of the output only (half an ulp is 4.9e-4)
    torch.testing.assert_close(y.double(), expected, rtol=1e-3, atol=0)


@pytest.mark.parametrize("channel_shared", [False, True])
def test_scale_gradient(channel_shared):
    layer = L2Norm(3, scale=2.0, channel_shared=channel_shared)
    x = torch.randn(2, 3, 4, 4)
    layer(x).sum().backward()
    expected = F.normalize(x, dim=1).sum(dim=(0, 2, 3))
    if channel_shared:
        expected = expected.sum().view(1)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-5, atol=1e-5)
