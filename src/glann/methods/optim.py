"""TensorFlow 1's RMSProp, as compare_gan v1's ``tf.train.RMSPropOptimizer(lr)`` runs it.

PyTorch's ``torch.optim.RMSprop`` is not the same optimiser: TF starts its mean square ``ms`` at
ones, PyTorch at zeros (so PyTorch's first step moves every weight by lr / sqrt(1 - decay) whatever
its gradient, TF's by lr g / sqrt(decay + (1 - decay) g²)), and TF adds epsilon inside the square
root, PyTorch outside. TF1 (``training_ops.ApplyRMSProp``), with
decay rho = 0.9, momentum 0 and epsilon 1e-10 by default:

    ms  <- rho ms + (1 - rho) g²          (ms_0 = 1)
    mom <- momentum mom + lr g / sqrt(ms + epsilon)
    w   <- w - mom
"""

from __future__ import annotations

import torch


class TFRMSProp(torch.optim.Optimizer):
    def __init__(self, params, lr: float, decay: float = 0.9, momentum: float = 0.0, eps: float = 1e-10):
        if lr <= 0 or not 0 <= decay < 1 or momentum < 0 or eps < 0:
            raise ValueError(f"TFRMSProp: invalid lr {lr}, decay {decay}, momentum {momentum} or eps {eps}")
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["decay"]).addcmul_(p.grad, p.grad, value=1 - group["decay"])
                mom.mul_(group["momentum"]).add_(group["lr"] * p.grad / (ms + group["eps"]).sqrt())
                p.sub_(mom)
        return loss
