import torch

from rspretrain.nn.memory_queue import MemoryQueue


def test_fifo_order_and_wraparound():
    q = MemoryQueue(size=5, dim=2)
    q.enqueue(torch.tensor([[1.0, 0], [2, 0], [3, 0]]))
    assert int(q.pointer) == 3
    assert q.keys[:3, 0].tolist() == [1, 2, 3]
    q.enqueue(torch.tensor([[4.0, 0], [5, 0], [6, 0]]))  # 6 wraps to slot 0
    assert int(q.pointer) == 1
    assert q.keys[:, 0].tolist() == [6, 2, 3, 4, 5]


def test_several_batches_enqueued_in_one_call():
    q = MemoryQueue(size=4, dim=1)
    q.enqueue(torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]]))
    assert q.keys[:3, 0].tolist() == [1, 2, 3]
    assert int(q.pointer) == 3


def test_more_keys_than_slots_keeps_newest():
    q = MemoryQueue(size=3, dim=1)
    q.enqueue(torch.arange(5.0).view(5, 1))
    assert q.keys[:, 0].tolist() == [2, 3, 4]
    assert int(q.pointer) == 0


def test_negatives_are_a_snapshot_and_buffers_are_saved():
    q = MemoryQueue(size=4, dim=3)
    snap = q()
    q.enqueue(torch.ones(2, 3))
    assert not torch.equal(snap, q.keys)
    state = q.state_dict()
    assert set(state) == {"keys", "pointer"}
    # initial keys are unit vectors
    fresh = MemoryQueue(size=8, dim=16)
    assert torch.allclose(fresh.keys.norm(dim=1), torch.ones(8), atol=1e-5)
