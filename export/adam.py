"""Adam and AdamW whose every step gives the same bits on every x86-64 CPU.

torch.optim's Adam takes the square root of the second moment with `Tensor.sqrt`, which ATen hands
to MKL's vector math library: not correctly rounded (152 of 1,000 float32 roots off by an ulp here) and
not covered by MKL_CBWR, so its last bits depend on the CPU (an Intel Xeon and an emulated AMD EPYC
disagree after 20 epochs; MKL_ENABLE_INSTRUCTIONS does not change it, so no setting pins it). This is
torch's update rule (`torch.optim.adam._single_tensor_adam`) with the root taken by numpy, whose float32
sqrt is the hardware instruction, correctly rounded by IEEE 754 everywhere, and the bias corrections'
powers taken by repeated multiplication instead of libm's `pow` (exact operations only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch


class Adam(torch.optim.Optimizer):
    """Adam with L2 weight decay, or with `decoupled` weight decay AdamW (Loshchilov & Hutter)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, decoupled: bool,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "decoupled": decoupled,
                                  "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, weight_decay, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state.update(beta1_power=1.0, beta2_power=1.0, exp_avg=torch.zeros_like(param),
                                 exp_avg_sq=torch.zeros_like(param))
                grad = param.grad
                if weight_decay and group["decoupled"]:
                    param.mul_(1 - lr * weight_decay)
                elif weight_decay:
                    grad = grad.add(param, alpha=weight_decay)
                state["beta1_power"] *= beta1
                state["beta2_power"] *= beta2
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                root = torch.from_numpy(np.sqrt(exp_avg_sq.numpy()))
                denominator = root.div_(math.sqrt(1 - state["beta2_power"])).add_(eps)
                param.addcdiv_(exp_avg, denominator, value=-lr / (1 - state["beta1_power"]))
