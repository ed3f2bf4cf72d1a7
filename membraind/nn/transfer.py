"""Transfer learning: which parameters of a fine-tuned network learn, and how fast.

The five modes of the mEMbrain paper (the original code had none of them):

- ``continue``: every parameter keeps learning (default);
- ``freeze-all-but-last``: only the final 1x1 classifier learns;
- ``freeze-encoder``: the down path (and bottleneck) is fixed, the decoder learns;
- ``leaky``: the encoder learns at ``leaky_factor`` times the learning rate;
- ``episodic``: everything learns, and every batch mixes in patches of the parent's own
  training data, so the network does not forget what it knew (the training batches mix
  them in: :mod:`membraind.groundtruth.batches`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from membraind.nn.settings import TransferSettings


@dataclass
class TransferPlan:
    """Parameter groups for the optimizer and the modules that must stay frozen."""

    groups: list[dict] = field(default_factory=list)
    frozen: list[nn.Module] = field(default_factory=list)

    def keep_frozen(self) -> None:
        """Hold frozen modules in eval mode, so batch-norm statistics do not drift either."""
        for module in self.frozen:
            module.eval()


def plan_transfer(model: nn.Module, settings: TransferSettings | None, learning_rate: float) -> TransferPlan:
    """Freeze what ``settings.mode`` says and build the optimizer's parameter groups."""
    mode = settings.mode if settings else "continue"
    frozen: list[nn.Module] = []
    if mode == "freeze-all-but-last":
        frozen = [child for name, child in model.named_children() if name != "head"]
    elif mode == "freeze-encoder":
        frozen = [model.encoder]
    for module in frozen:
        module.requires_grad_(False)
    if mode == "leaky":
        encoder_ids = {id(p) for p in model.encoder.parameters()}
        rest = [p for p in model.parameters() if id(p) not in encoder_ids]
        groups = [
            {"params": list(model.encoder.parameters()), "lr": learning_rate * settings.leaky_factor},
            {"params": rest, "lr": learning_rate},
        ]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": learning_rate}]
    return TransferPlan(groups, frozen)
