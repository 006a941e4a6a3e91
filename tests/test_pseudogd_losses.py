"""PseudoGD's eq. 3 and eq. 4 against literal loops, eq. 3's partial scale invariance, the depth head's range."""
import math

import pytest
import torch

from gasp.objectives.pseudogd import DEPTH_MIN, DepthHead, depth_loss, structure_loss


def test_depth_loss_is_eq3_read_literally():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(37, generator=g) * 8 + 0.01                   # some below the 0.1 clamp
    target = torch.rand(37, generator=g) * 8 + 0.01
    target[3] = float("nan")                                        # unknown depth: left out
    ds = [math.log(max(float(p), 0.1)) - math.log(max(float(t), 0.1)) for p, t in zip(pred, target)
          if math.isfinite(float(t))]
    n = len(ds)
    want = sum(d * d for d in ds) / n - sum(ds) ** 2 / (2 * n * n)
    assert float(depth_loss(pred, target)) == pytest.approx(want, rel=1e-6)


def test_depth_loss_is_half_scale_invariant():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(50, generator=g) + 0.5, torch.rand(50, generator=g) + 0.5
    d = torch.log(pred) - torch.log(target)
    for c in (-0.3, 0.2, 1.0):                                      # multiply every prediction by e^c
        shifted = depth_loss(pred * math.exp(c), target)
        assert float(shifted - depth_loss(pred, target)) == pytest.approx(float(c * d.mean() + c * c / 2), abs=1e-5)


def test_structure_loss_is_one_minus_mean_cosine():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(9, 256, generator=g), torch.randn(9, 256, generator=g)
    want = 1 - sum(float(a[i] @ b[i] / (a[i].norm() * b[i].norm())) for i in range(9)) / 9
    assert float(structure_loss(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(structure_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)
    keep = torch.tensor([True, False] * 4 + [True])
    assert float(structure_loss(a, b, keep)) == pytest.approx(float(structure_loss(a[keep], b[keep])), abs=1e-7)


def test_the_depth_head_predicts_above_its_floor():
    torch.manual_seed(0)
    head = DepthHead(16)
    with torch.no_grad():
        y = head(torch.randn(4, 5, 16) * 50)
        low = head(torch.full((1, 16), -1e4))
    assert y.shape == (4, 5) and float(y.min()) > DEPTH_MIN and head.fc1.out_features == 1024
    assert float(low.min()) >= DEPTH_MIN                                         # softplus -> 0, never below 0.1
