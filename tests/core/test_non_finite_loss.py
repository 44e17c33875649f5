import lightning as L
import pytest
import torch

from rspretrain.core.errors import NonFiniteLossError
from rspretrain.core.non_finite_loss import stop_if_not_finite


def test_a_finite_loss_passes_and_a_non_finite_one_names_the_step_and_the_bad_terms():
    module = L.LightningModule()  # no trainer: one process, step 0
    stop_if_not_finite(module, torch.tensor(1.5), {"loss_a": torch.tensor(1.0), "loss_b": 0.5})
    with pytest.raises(NonFiniteLossError, match=r"^step 0: loss is inf \(loss_b=inf\); stopping$"):
        stop_if_not_finite(module, torch.tensor(float("inf")), {"loss_a": torch.tensor(1.0), "loss_b": float("inf"),
                                                                  "lr": float("nan")})
    with pytest.raises(NonFiniteLossError, match=r"\(no separate term is non-finite\)"):
        stop_if_not_finite(module, torch.tensor(float("nan")), {"loss_a": torch.tensor(1.0)})
