"""Task data, loss and metric, following pytorch-dnc's task scripts (batched here).

Every task draws its data from an explicit ``torch.Generator`` so that a resumed run sees the same
data as an uninterrupted one. Inputs are ``(B, T, input_size)``, batch first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Batch(NamedTuple):
    inputs: Tensor  # (B, T, input_size)
    targets: Tensor  # task-specific
    length: int  # the sequence length the batch was drawn with


class Task:
    """A task: ``sample(batch_size, length, generator)``, ``loss(output, batch)``, ``metric(...)``."""

    name: str = ""
    metric_name: str = ""
    #: Generalisation evaluation lengths, as multiples of the training length.
    eval_multiples: tuple[int, ...] = (1,)
    #: Whether a larger metric is better (``--stop-at`` stops at or above the target, else at or below).
    higher_is_better: bool = False
    #: The shortest and longest ``length`` the task can draw (``None``: no limit).
    min_length: int = 1
    max_length: int | None = None
    #: The ``-input_size`` a task script uses unless told otherwise.
    default_input_size: int = 6
    #: Output features the task reads (``None``: the input size).
    output_size: int | None = None

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        """The batch whose inputs are ``inputs`` ``(B, T, input_size)``: every task's targets follow from
        its inputs. ``ValueError`` if ``T`` cannot be this task's sequence length."""
        raise NotImplementedError

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def metric(self, output: Tensor, batch: Batch) -> float:
        raise NotImplementedError


class CopyTask(Task):
    """Copy: ``length`` random binary vectors, a delimiter, then reproduce them.

    ``input_size - 1`` bits per vector; the last channel carries the delimiter. The loss is the
    binary cross-entropy over the recall phase; ``bit_errors`` is the number of wrong bits per
    sequence in the recall phase (mean over the batch) -- pytorch-dnc's accuracy also counted the
    all-zero input-phase targets and read about 0.8 at chance.
    """

    name, metric_name, eval_multiples = "copy", "bit_errors", (1, 2, 4)

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        bits = self.input_size - 1
        seq = torch.randint(0, 2, (batch_size, length, bits), generator=generator).float()
        inputs = torch.zeros(batch_size, 2 * length + 1, self.input_size)
        inputs[:, :length, :bits] = seq
        inputs[:, length, bits] = 1.0  # delimiter
        return Batch(inputs, seq, length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        steps = inputs.shape[1]
        if steps % 2 == 0:
            raise ValueError(
                f"copy inputs have 2 * length + 1 steps (the sequence, the delimiter, the recall phase), got {steps}"
            )
        length = steps // 2
        return Batch(inputs, (inputs[:, :length, : self.input_size - 1] > 0.5).float(), length)

    def _recall(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, batch.length + 1 :, : self.input_size - 1]

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.binary_cross_entropy_with_logits(self._recall(output, batch), batch.targets)

    def metric(self, output: Tensor, batch: Batch) -> float:
        wrong = (self._recall(output, batch) > 0) != (batch.targets > 0.5)
        return wrong.float().sum(dim=(1, 2)).mean().item()


def _one_hot_sequence(batch_size: int, length: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``length`` one-hot numbers in ``[0, size - 2]`` and a terminator (one-hot ``size - 1``)."""
    numbers = torch.randint(0, size - 1, (batch_size, length), generator=generator)
    inputs = F.one_hot(numbers, size).float()
    end = F.one_hot(torch.full((batch_size, 1), size - 1), size).float()
    return torch.cat([inputs, end], dim=1), numbers


def _numbers_from_inputs(inputs: Tensor, size: int) -> Tensor:
    """The numbers :func:`_one_hot_sequence` encoded: ``(B, T)`` inputs with a terminator -> ``(B, T - 1)``."""
    if inputs.shape[1] < 2:
        raise ValueError(f"inputs need at least one number and the terminator (2 steps), got {inputs.shape[1]}")
    return inputs[:, :-1, : size - 1].argmax(-1)


class AddingTask(Task):
    """Adding: one-hot numbers then a terminator; the last output, summed over features, is the sum.

    The loss is the squared error of the sum (as pytorch-dnc); the metric is its absolute error.
    Generalisation is reported at 10x the training length.
    """

    name, metric_name, eval_multiples = "adding", "abs_error", (1, 10)

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        inputs, numbers = _one_hot_sequence(batch_size, length, self.input_size, generator)
        return Batch(inputs, numbers.sum(1).float(), length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        numbers = _numbers_from_inputs(inputs, self.input_size)
        return Batch(inputs, numbers.sum(1).float(), numbers.shape[1])

    def _prediction(self, output: Tensor) -> Tensor:
        return output[:, -1, :].sum(-1)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.mse_loss(self._prediction(output), batch.targets)

    def metric(self, output: Tensor, batch: Batch) -> float:
        return (self._prediction(output) - batch.targets).abs().mean().item()


class ArgmaxTask(Task):
    """Argmax: one-hot numbers then a terminator; the last output gives the position of the largest.

    The last output's features are scores over positions (the first ``length`` are used), trained
    with cross-entropy; ``accuracy`` is how often the top score is the (last) largest input's
    position. This needs ``input_size >= length``-many output features when ``output_size`` is the
    input size, so the model's output size is set to the maximum length by the trainer.
    """

    name, metric_name, eval_multiples = "argmax", "accuracy", (1,)
    higher_is_better = True

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        inputs, numbers = _one_hot_sequence(batch_size, length, self.input_size, generator)
        return self._batch(inputs, numbers)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        return self._batch(inputs, _numbers_from_inputs(inputs, self.input_size))

    def _batch(self, inputs: Tensor, numbers: Tensor) -> Batch:
        length = numbers.shape[1]
        # The last occurrence of the maximum, as pytorch-dnc's loop (``<=``) picks.
        position = length - 1 - numbers.flip(1).argmax(1)
        return Batch(inputs, position, length)

    def _scores(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, -1, : batch.length]

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(self._scores(output, batch), batch.targets)

    def metric(self, output: Tensor, batch: Batch) -> float:
        return (self._scores(output, batch).argmax(-1) == batch.targets).float().mean().item()


TASKS: dict[str, type[Task]] = {"copy": CopyTask, "adding": AddingTask, "argmax": ArgmaxTask}

# The papers' tasks (repeat copy, associative recall, priority sort, key-value, graph tasks); imported
# here, after Task and Batch exist, because they build on them.
from memfn.tasks.paper_tasks import PAPER_TASKS  # noqa: E402

TASKS.update(PAPER_TASKS)
