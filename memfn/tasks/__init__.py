"""The classic algorithmic tasks (copy, adding, argmax) and their training loop.

The scripts ``tasks/copy_task.py``, ``tasks/adding_task.py`` and ``tasks/argmax_task.py`` are thin
entry points to :func:`memfn.tasks.train.main`, with pytorch-dnc's command-line options. The papers'
tasks (repeat copy, associative recall, priority sort, key-value retrieval, graph traversal, shortest
path) are in :mod:`memfn.tasks.paper_tasks`, with the same kind of scripts, and in ``TASKS``.
"""

from memfn.tasks.definitions import TASKS, AddingTask, ArgmaxTask, Batch, CopyTask, Task

__all__ = ["TASKS", "AddingTask", "ArgmaxTask", "Batch", "CopyTask", "Task"]
