import math

import pytest
import torch
from torch.nn import functional as F

from rspretrain.losses.info_nce import InfoNCELoss, info_nce


def test_value_with_identical_query_key_and_orthogonal_queue():
    # q = k (cos 1) and K negatives orthogonal to q (cos 0):
    # L = -log(e^{1/t} / (e^{1/t} + K e^0)).
    d, k, tau = 8, 5, 0.2
    q = F.one_hot(torch.zeros(3, dtype=torch.long), d).float()
    negatives = F.one_hot(torch.arange(1, k + 1), d).float()
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + k))
    assert info_nce(q, q, negatives, tau).item() == pytest.approx(expected, rel=1e-5)


def test_matches_manual_cross_entropy_and_normalises():
    torch.manual_seed(0)
    q, pos, neg = torch.randn(4, 6), torch.randn(4, 6), torch.randn(10, 6)
    qn, pn, nn_ = F.normalize(q, dim=1), F.normalize(pos, dim=1), F.normalize(neg, dim=1)
    logits = torch.cat([(qn * pn).sum(1, keepdim=True), qn @ nn_.T], dim=1) / 0.07
    manual = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(InfoNCELoss(0.07)(q * 3.0, pos, neg), manual, atol=1e-5)


def test_gradient_flows_to_query_only_when_key_detached():
    q = torch.randn(2, 4, requires_grad=True)
    k = torch.randn(2, 4)
    info_nce(q, k, torch.randn(3, 4), 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_bf16_autocast_inputs_give_the_fp32_loss():
    """Under bf16 autocast the logits are computed in fp32 (a bf16 matmul would round cos / 0.07 by up to 0.06):
    bf16 embeddings give the loss of their fp32 values, in fp32."""
    torch.manual_seed(0)
    q, pos, neg = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16(), torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q, pos, neg, 0.07)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(q.float(), pos.float(), neg, 0.07), rtol=1e-6, atol=1e-6)
