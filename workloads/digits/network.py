"""LeNet-300-100 adapted to scikit-learn's digits: the model, its training loop and accuracy.

The paper's LeNet-300-100 with 64 inputs instead of 784: 64 -> 300 -> 100 -> 10.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from workloads.digits.data import DigitsSplit


class LeNet300100(nn.Module):
    """LeNet-300-100 for 8x8 digits: fully connected 64 -> 300 -> 100 -> 10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def train(
    model: nn.Module,
    split: DigitsSplit,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> float:
    """Adam on minibatches of the training set; ``penalty()`` is added to the loss and
    ``after_step()`` runs after every optimizer step (the compressor's hooks). Builds its own
    optimizer over the model's trainable parameters. Returns the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    n = split.x_train.shape[0]
    mean_loss = float("nan")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(split.x_train[batch]), split.y_train[batch])
            if penalty is not None:
                loss = loss + penalty()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * batch.numel()
        mean_loss = total / n
    return mean_loss


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of correctly classified samples, in percent."""
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean()) * 100.0


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored afterwards).

    The network's matrices are tiny: thread start-up and contention then dominate (measured 10x
    slower with torch's default threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
