import numpy as np

from rspretrain.data.step_batches import StepBatches


def _draw(rng):
    return rng.integers(0, 1_000_000, size=3).tolist()


def test_a_batch_is_a_function_of_seed_step_and_rank():
    a, b = StepBatches(_draw, 4, seed=1), StepBatches(_draw, 4, seed=1)
    assert a.batch_at(7) == b.batch_at(7)
    assert a.batch_at(7) != a.batch_at(8)
    assert StepBatches(_draw, 4, seed=1, rank=1).batch_at(7) != a.batch_at(7)
    assert StepBatches(_draw, 4, seed=2).batch_at(7) != a.batch_at(7)


def test_iteration_runs_from_the_current_step_to_the_end_of_its_epoch():
    position = {"step": 0}
    batches = StepBatches(_draw, 4, seed=0, position=lambda: position["step"])
    first_epoch = list(batches)
    assert len(first_epoch) == len(batches) == 4
    position["step"] = 6  # a run resumed in the middle of its second epoch
    resumed = list(batches)
    assert resumed == [batches.batch_at(6), batches.batch_at(7)]
    np.testing.assert_array_equal(first_epoch[2], batches.batch_at(2))
