import pytest
import torch

from rspretrain.nn.restoration_branch import RestorationBranch


@pytest.mark.parametrize("size", [16, 24, 10])
def test_restores_the_input_shape_and_classifies(size):
    branch = RestorationBranch(64, num_classes=21, width=16)
    x = torch.randn(2, 64, size, size)
    restored, logits = branch(x)
    assert restored.shape == x.shape and logits.shape == (2, 21)


@pytest.fixture
def one_thread():
    # kernels this small run fastest on one thread (and do not stall when the machine is busy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_branch_can_learn_to_restore_an_unshuffled_map(one_thread):
    torch.manual_seed(0)
    branch = RestorationBranch(4, num_classes=2, width=8)
    x = torch.rand(8, 4, 8, 8)
    opt = torch.optim.Adam(branch.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(branch(x)[0], x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
