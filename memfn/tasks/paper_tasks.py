"""The papers' algorithmic tasks: repeat copy, associative recall, priority sort, key-value
retrieval, graph traversal and shortest path.

Generated on the fly from an explicit ``torch.Generator`` (no download), batch first, with the
:class:`~memfn.tasks.definitions.Task` interface. ``length`` is what the trainer's curriculum grows
and what ``--eval-lengths`` names: the sequence length for repeat copy, the number of items for
associative recall, priority sort and key-value retrieval, and the number of nodes for the graph
tasks. ``input_size`` sizes the encoding (each class says how), and ``output_size`` is the width of
the model's output that the task reads.

Metrics are fractions: ``bit_error_rate`` (wrong answer bits over all answer bits, lower is better)
and ``edge_accuracy`` (answer edges right, higher is better; :attr:`Task.higher_is_better`).
Targets mark the outputs that are not scored with ``-1``.
"""

from __future__ import annotations

from collections import deque
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from memfn.tasks.definitions import Batch, Task

# -- shared pieces -------------------------------------------------------------------------------


def _bits_of(codes: Tensor, bits: int) -> Tensor:
    """Integers ``(...)`` -> their ``bits`` low bits ``(..., bits)`` as floats (most significant first)."""
    shifts = torch.arange(bits - 1, -1, -1)
    return ((codes[..., None] >> shifts) & 1).float()


def distinct_codes(batch_size: int, count: int, bits: int, generator: torch.Generator) -> Tensor:
    """``(B, count, bits)`` random binary vectors, distinct within each example.

    ``ValueError`` if ``count > 2 ** bits``. Above 2 ** 16 codes, vectors are drawn independently
    (a repeat then has probability below ``count ** 2 / 2 ** 17``).
    """
    if count > 2**bits:
        raise ValueError(f"{count} distinct items need more than {bits} bits (at most {2**bits} codes)")
    if bits > 16:
        return torch.randint(0, 2, (batch_size, count, bits), generator=generator).float()
    codes = torch.rand(batch_size, 2**bits, generator=generator).argsort(-1)[:, :count]
    return _bits_of(codes, bits)


def _masked_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy over the scored targets (``>= 0``), averaged over them."""
    scored = targets >= 0
    return F.binary_cross_entropy_with_logits(logits[scored], targets[scored])


def _bit_error_rate(logits: Tensor, targets: Tensor) -> float:
    """Wrong scored bits (``logit > 0`` against ``target > 0.5``) over all scored bits."""
    scored = targets >= 0
    wrong = (logits[scored] > 0) != (targets[scored] > 0.5)
    return wrong.float().mean().item() if scored.any() else 0.0


class _BitTask(Task):
    """Shared by the tasks whose answer is bits: masked BCE loss, ``bit_error_rate`` metric."""

    metric_name = "bit_error_rate"
    default_input_size = 6

    def _answer(self, output: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return _masked_bce(self._answer(output, batch), batch.targets)

    def metric(self, output: Tensor, batch: Batch) -> float:
        return _bit_error_rate(self._answer(output, batch), batch.targets)


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# -- repeat copy (NTM; deepmind/dnc) ---------------------------------------------------------------


class RepeatCopyTask(_BitTask):
    """Repeat copy (Graves et al. 2014): copy a sequence of ``length`` bit vectors ``r`` times.

    ``input_size - 2`` bits per vector (default 6: 4 bits). Inputs, ``length + 2 + max_repeats *
    length`` steps: the vectors; one step with the delimiter channel (``bits``) set and the repeat
    count ``r`` (uniform in ``1..max_repeats``, here 3) as ``r / max_repeats`` in the last channel;
    then a zero recall phase of ``max_repeats * length + 1`` steps. Outputs: ``bits + 1`` channels,
    the copies ``r`` times then the end flag (channel ``bits``) at recall step ``r * length``. Scored:
    every bit of the ``r`` copies, and the end flag at every recall step (so stopping too early or too
    late is wrong); the bits after the end are not. Generalisation: 2x and 4x the length.
    """

    name, eval_multiples = "repeat_copy", (1, 2, 4)
    max_repeats = 3

    def __init__(self, input_size: int) -> None:
        _need(input_size >= 3, f"repeat_copy needs input_size >= 3 (bits + delimiter + repeats), got {input_size}")
        super().__init__(input_size)
        self.bits = input_size - 2
        self.output_size = self.bits + 1

    def _targets(self, seq: Tensor, repeats: Tensor) -> Tensor:
        batch_size, length, bits = seq.shape
        steps = self.max_repeats * length + 1
        t = torch.arange(steps)
        copies = seq[:, t % length]  # (B, steps, bits)
        answer_end = (repeats * length)[:, None]  # (B, 1)
        bits_t = torch.where((t[None] < answer_end)[..., None], copies, torch.full_like(copies, -1.0))
        end = (t[None] == answer_end).float()[..., None]
        return torch.cat([bits_t, end], dim=-1)

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        _need(length >= 1, f"repeat_copy needs length >= 1, got {length}")
        seq = torch.randint(0, 2, (batch_size, length, self.bits), generator=generator).float()
        repeats = torch.randint(1, self.max_repeats + 1, (batch_size,), generator=generator)
        inputs = torch.zeros(batch_size, length + 2 + self.max_repeats * length, self.input_size)
        inputs[:, :length, : self.bits] = seq
        inputs[:, length, self.bits] = 1.0
        inputs[:, length, self.bits + 1] = repeats.float() / self.max_repeats
        return Batch(inputs, self._targets(seq, repeats), length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        steps = inputs.shape[1]
        _need(
            steps >= 2 + (1 + self.max_repeats) and (steps - 2) % (1 + self.max_repeats) == 0,
            f"repeat_copy inputs have (1 + {self.max_repeats}) * length + 2 steps, got {steps}",
        )
        length = (steps - 2) // (1 + self.max_repeats)
        seq = (inputs[:, :length, : self.bits] > 0.5).float()
        repeats = (inputs[:, length, self.bits + 1] * self.max_repeats).round().long().clamp(1, self.max_repeats)
        return Batch(inputs, self._targets(seq, repeats), length)

    def _answer(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, batch.length + 1 :, : self.bits + 1]


# -- associative recall (NTM; SAM paper) ------------------------------------------------------------


class AssociativeRecallTask(_BitTask):
    """Associative recall (Graves et al. 2014; Rae et al. 2016) with one-vector items.

    ``input_size - 2`` bits per item (default 8: 6 bits, 64 codes); ``length`` >= 2 items, distinct
    within a sequence. Inputs, ``length + 2`` steps: the items; the query (one of the first
    ``length - 1`` items) with the query channel (``bits``) set; an answer step with the answer
    channel (``bits + 1``) set. Output: ``bits`` channels; at the answer step, the item that followed
    the query. Scored: those bits. Generalisation: 2x and 4x the number of items.
    """

    name, eval_multiples = "associative_recall", (1, 2, 4)
    default_input_size = 8
    min_length = 2

    def __init__(self, input_size: int) -> None:
        _need(input_size >= 3, f"associative_recall needs input_size >= 3 (bits + 2 flags), got {input_size}")
        super().__init__(input_size)
        self.bits = input_size - 2
        self.output_size = self.bits
        self.max_length = 2**self.bits

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        _need(length >= 2, f"associative_recall needs at least 2 items, got {length}")
        items = distinct_codes(batch_size, length, self.bits, generator)
        query = torch.randint(0, length - 1, (batch_size,), generator=generator)
        inputs = torch.zeros(batch_size, length + 2, self.input_size)
        inputs[:, :length, : self.bits] = items
        rows = torch.arange(batch_size)
        inputs[:, length, : self.bits] = items[rows, query]
        inputs[:, length, self.bits] = 1.0
        inputs[:, length + 1, self.bits + 1] = 1.0
        return Batch(inputs, items[rows, query + 1], length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        _need(inputs.shape[1] >= 4, f"associative_recall inputs have items + 2 steps (>= 4), got {inputs.shape[1]}")
        length = inputs.shape[1] - 2
        items = (inputs[:, :length, : self.bits] > 0.5).float()
        query = (inputs[:, length, : self.bits] > 0.5).float()
        match = (items[:, :-1] == query[:, None]).all(-1)  # (B, length - 1)
        _need(bool(match.any(-1).all()), "a query is not among the first length - 1 items")
        first = match.float().argmax(-1)
        return Batch(inputs, items[torch.arange(items.shape[0]), first + 1], length)

    def _answer(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, -1, : self.bits]


# -- priority sort (NTM) ---------------------------------------------------------------------------


def _sorted_count(length: int) -> int:
    """How many of ``length`` vectors the answer holds: the NTM paper's 16 of 20 (``length - length // 5``)."""
    return length - length // 5


class PrioritySortTask(_BitTask):
    """Priority sort (Graves et al. 2014): ``length`` bit vectors with priorities; output the
    ``length - length // 5`` of highest priority (16 of 20 as in the paper), highest first.

    ``input_size - 2`` bits per vector (default 7: 5 bits); each input step carries a vector and its
    priority (uniform in [-1, 1]) in channel ``bits``; then one step with the delimiter channel
    (``bits + 1``); then the zero answer phase, one step per output vector. Output: ``bits``
    channels. Scored: every answer bit. Generalisation: 2x the number of vectors.
    """

    name, eval_multiples = "priority_sort", (1, 2)
    default_input_size = 7

    def __init__(self, input_size: int) -> None:
        _need(input_size >= 3, f"priority_sort needs input_size >= 3 (bits + priority + delimiter), got {input_size}")
        super().__init__(input_size)
        self.bits = input_size - 2
        self.output_size = self.bits

    def _batch(self, inputs: Tensor, vectors: Tensor, priority: Tensor) -> Batch:
        length = vectors.shape[1]
        order = priority.argsort(dim=-1, descending=True, stable=True)[:, : _sorted_count(length)]
        return Batch(inputs, vectors.gather(1, order[..., None].expand(-1, -1, self.bits)), length)

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        _need(length >= 1, f"priority_sort needs length >= 1, got {length}")
        vectors = torch.randint(0, 2, (batch_size, length, self.bits), generator=generator).float()
        priority = torch.rand(batch_size, length, generator=generator) * 2 - 1
        inputs = torch.zeros(batch_size, length + 1 + _sorted_count(length), self.input_size)
        inputs[:, :length, : self.bits] = vectors
        inputs[:, :length, self.bits] = priority
        inputs[:, length, self.bits + 1] = 1.0
        return self._batch(inputs, vectors, priority)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        delimiter = (inputs[0, :, self.bits + 1] > 0.5).nonzero()
        _need(len(delimiter) == 1, "priority_sort inputs have one delimiter step")
        length = int(delimiter[0, 0])
        _need(length >= 1 and inputs.shape[1] == length + 1 + _sorted_count(length), "wrong number of answer steps")
        vectors = (inputs[:, :length, : self.bits] > 0.5).float()
        return self._batch(inputs, vectors, inputs[:, :length, self.bits])

    def _answer(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, batch.length + 1 :, : self.bits]


# -- key-value retrieval (Csordas & Schmidhuber 2019) ----------------------------------------------


class KeyValueTask(_BitTask):
    """Key-value retrieval (Csordas & Schmidhuber 2019): ``length`` key-value pairs, then the keys in
    shuffled order; answer each key's value.

    Keys and values have ``(input_size - 1) // 2`` bits each (default 9: 4 bits, 16 keys); keys are
    distinct within a sequence, values random. Inputs, ``2 * length + 1`` steps: one step per pair
    (key in channels ``0..bits-1``, value in ``bits..2*bits-1``); a step with the delimiter channel
    (``2 * bits``); one step per query key (the keys permuted). Output: ``bits`` channels; at each
    query step, that key's value. Scored: every value bit. Generalisation: 2x and 4x the pairs.
    """

    name, eval_multiples = "key_value", (1, 2, 4)
    default_input_size = 9

    def __init__(self, input_size: int) -> None:
        _need(input_size >= 3, f"key_value needs input_size >= 3 (key + value + delimiter), got {input_size}")
        super().__init__(input_size)
        self.bits = (input_size - 1) // 2
        self.output_size = self.bits
        self.max_length = 2**self.bits

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        _need(length >= 1, f"key_value needs length >= 1, got {length}")
        b = self.bits
        keys = distinct_codes(batch_size, length, b, generator)
        values = torch.randint(0, 2, (batch_size, length, b), generator=generator).float()
        order = torch.rand(batch_size, length, generator=generator).argsort(-1)[..., None]
        inputs = torch.zeros(batch_size, 2 * length + 1, self.input_size)
        inputs[:, :length, :b] = keys
        inputs[:, :length, b : 2 * b] = values
        inputs[:, length, 2 * b] = 1.0
        inputs[:, length + 1 :, :b] = keys.gather(1, order.expand(-1, -1, b))
        return Batch(inputs, values.gather(1, order.expand(-1, -1, b)), length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        steps, b = inputs.shape[1], self.bits
        _need(steps >= 3 and steps % 2 == 1, f"key_value inputs have 2 * length + 1 steps, got {steps}")
        length = steps // 2
        keys = (inputs[:, :length, :b] > 0.5).float()
        values = (inputs[:, :length, b : 2 * b] > 0.5).float()
        queries = (inputs[:, length + 1 :, :b] > 0.5).float()
        match = (queries[:, :, None] == keys[:, None]).all(-1)  # (B, queries, keys)
        _need(bool(match.any(-1).all()), "a query key is not among the keys")
        which = match.float().argmax(-1)
        return Batch(inputs, values.gather(1, which[..., None].expand(-1, -1, b)), length)

    def _answer(self, output: Tensor, batch: Batch) -> Tensor:
        return output[:, batch.length + 1 :, : self.bits]


# -- graph tasks (DNC paper) -----------------------------------------------------------------------


class _GraphTask(Task):
    """Random directed graphs of ``length`` nodes (the size the curriculum grows).

    Nodes carry distinct random ids in ``[0, ids)`` (``ids = (input_size - labels - 2) // 2``; the
    default input size gives 12 ids, so graphs up to 12 nodes); each node has ``degree`` (2) outgoing
    edges to distinct other nodes, with distinct labels out of ``labels`` (3). Edges are presented
    one per step in random order: the source id one-hot in channels ``[0, ids)``, the destination in
    ``[ids, 2 ids)``, the label in ``[2 ids, 2 ids + labels)``; the last two channels flag the query
    and the answer steps. The output has ``2 ids + labels`` channels: an edge as (source, destination,
    label) scores, each trained with cross-entropy. ``edge_accuracy``: answer edges whose three parts
    are all right, over all answer edges.
    """

    metric_name = "edge_accuracy"
    higher_is_better = True
    labels = 3
    degree = 2
    min_length = 3
    default_input_size = 2 * 12 + 3 + 2

    def __init__(self, input_size: int) -> None:
        super().__init__(input_size)
        self.ids = (input_size - self.labels - 2) // 2
        _need(self.ids >= self.min_length, f"{self.name} needs input_size >= {2 * self.min_length + self.labels + 2}")
        self.output_size = 2 * self.ids + self.labels
        self.max_length = self.ids
        self.query_flag, self.answer_flag = input_size - 2, input_size - 1

    # The graph as Python lists: edges[(source, label)] = destination, over node ids.
    def _graph(self, nodes: int, generator: torch.Generator) -> tuple[list[int], dict[tuple[int, int], int]]:
        ids = torch.randperm(self.ids, generator=generator)[:nodes].tolist()
        edges = {}
        for node in ids:
            others = [ids[j] for j in torch.randperm(nodes - 1, generator=generator).tolist()]
            others = [o if o != node else ids[nodes - 1] for o in others]  # self -> the last node
            labels = torch.randperm(self.labels, generator=generator)[: self.degree].tolist()
            for label, dest in zip(labels, others[: self.degree]):
                edges[(node, label)] = dest
        return ids, edges

    def _edge_steps(self, edges: dict[tuple[int, int], int], generator: torch.Generator) -> Tensor:
        order = torch.randperm(len(edges), generator=generator).tolist()
        items = list(edges.items())
        rows = torch.zeros(len(edges), self.input_size)
        for step, k in enumerate(order):
            (src, label), dst = items[k]
            rows[step, src] = rows[step, self.ids + dst] = rows[step, 2 * self.ids + label] = 1.0
        return rows

    def _decode_edges(self, rows: Tensor) -> dict[tuple[int, int], int]:
        src = rows[:, : self.ids].argmax(-1).tolist()
        dst = rows[:, self.ids : 2 * self.ids].argmax(-1).tolist()
        lab = rows[:, 2 * self.ids : 2 * self.ids + self.labels].argmax(-1).tolist()
        return {(s, lab_): d for s, lab_, d in zip(src, lab, dst)}

    def _parts(self, output: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        answer = output[:, -batch.targets.shape[1] :]
        i = self.ids
        return answer[..., :i], answer[..., i : 2 * i], answer[..., 2 * i : 2 * i + self.labels]

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        parts = self._parts(output, batch)
        return cast(
            Tensor,
            sum(
                F.cross_entropy(p.reshape(-1, p.shape[-1]), batch.targets[..., k].reshape(-1), ignore_index=-1)
                for k, p in enumerate(parts)
            ),
        )

    def metric(self, output: Tensor, batch: Batch) -> float:
        parts = self._parts(output, batch)
        right = torch.stack([p.argmax(-1) == batch.targets[..., k] for k, p in enumerate(parts)]).all(0)
        scored = batch.targets[..., 0] >= 0
        return right[scored].float().mean().item() if scored.any() else 1.0

    def _check_length(self, length: int) -> None:
        _need(
            self.min_length <= length <= self.ids,
            f"{self.name} draws graphs of {self.min_length} to {self.ids} nodes (input_size), got {length}",
        )

    def _split(self, inputs: Tensor) -> tuple[int, int]:
        """(edges, answer steps) of a batch's inputs, from the flags of example 0."""
        query = (inputs[0, :, self.query_flag] > 0.5).nonzero()
        _need(len(query) == 1, f"{self.name} inputs have one query step")
        edges = int(query[0, 0])
        _need(edges >= self.degree * self.min_length and edges % self.degree == 0, "wrong number of edge steps")
        return edges, inputs.shape[1] - edges - 1


class GraphTraversalTask(_GraphTask):
    """Graph traversal (Graves et al. 2016): follow a path of edge labels from a start node.

    Inputs: the ``degree * length`` edges; the query step (start node id in the source slot, the
    query flag); then ``path_length`` (4) answer steps, each with the next label to follow (label
    slot) and the answer flag. At each answer step the output is the edge taken (source, destination,
    label). The labels arrive one per answer step (the DNC paper gives the whole label sequence
    before the answer phase; this keeps the task learnable on a CPU). Generalisation: larger graphs
    (``--eval-lengths`` up to ``ids``; the default eval is the trained size).
    """

    name, eval_multiples = "graph_traversal", (1,)
    path_length = 4

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        self._check_length(length)
        edges_n, steps = self.degree * length, self.path_length
        inputs = torch.zeros(batch_size, edges_n + 1 + steps, self.input_size)
        targets = torch.zeros(batch_size, steps, 3, dtype=torch.long)
        for b in range(batch_size):
            ids, edges = self._graph(length, generator)
            inputs[b, :edges_n] = self._edge_steps(edges, generator)
            node = ids[int(torch.randint(0, length, (1,), generator=generator))]
            inputs[b, edges_n, node] = inputs[b, edges_n, self.query_flag] = 1.0
            for t in range(steps):
                out = [label for (src, label) in edges if src == node]
                label = out[int(torch.randint(0, len(out), (1,), generator=generator))]
                inputs[b, edges_n + 1 + t, 2 * self.ids + label] = inputs[b, edges_n + 1 + t, self.answer_flag] = 1.0
                targets[b, t] = torch.tensor([node, edges[(node, label)], label])
                node = edges[(node, label)]
        return Batch(inputs, targets, length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        edges_n, steps = self._split(inputs)
        _need(steps >= 1, "graph_traversal inputs need at least one answer step")
        targets = torch.zeros(inputs.shape[0], steps, 3, dtype=torch.long)
        for b in range(inputs.shape[0]):
            edges = self._decode_edges(inputs[b, :edges_n])
            node = int(inputs[b, edges_n, : self.ids].argmax())
            for t in range(steps):
                label = int(inputs[b, edges_n + 1 + t, 2 * self.ids : 2 * self.ids + self.labels].argmax())
                _need((node, label) in edges, "a label with no edge to follow")
                targets[b, t] = torch.tensor([node, edges[(node, label)], label])
                node = edges[(node, label)]
        return Batch(inputs, targets, edges_n // self.degree)


def _unique_shortest(edges: dict[tuple[int, int], int], start: int) -> tuple[dict[int, int], dict[int, int]]:
    """BFS from ``start``: (distance, number of shortest paths) per reachable node."""
    dist, count, queue = {start: 0}, {start: 1}, deque([start])
    while queue:
        node = queue.popleft()
        for (src, _), dst in edges.items():
            if src != node:
                continue
            if dst not in dist:
                dist[dst], count[dst] = dist[node] + 1, count[node]
                queue.append(dst)
            elif dist[dst] == dist[node] + 1:
                count[dst] += count[node]
    return dist, count


def _path(edges: dict[tuple[int, int], int], start: int, goal: int, dist: dict[int, int]) -> list[tuple[int, int, int]]:
    """The (unique) shortest path start -> goal as (source, destination, label) edges."""
    path, node = [], goal
    while node != start:
        (src, label), _ = next(((k, v) for k, v in edges.items() if v == node and dist.get(k[0]) == dist[node] - 1))
        path.append((src, node, label))
        node = src
    return path[::-1]


class ShortestPathTask(_GraphTask):
    """Shortest path (Graves et al. 2016): the edges of the shortest path between two given nodes.

    Inputs: the ``degree * length`` edges; the query step (start id in the source slot, goal id in
    the destination slot, the query flag); then ``max_path`` (3) answer steps with the answer flag.
    Queries are drawn among pairs 1 to ``max_path`` edges apart that have exactly one shortest path,
    so the answer is unique: its edges in order, then unscored steps. Generalisation: larger graphs
    (``--eval-lengths``).
    """

    name, eval_multiples = "shortest_path", (1,)
    max_path = 3

    def _query(
        self, ids: list[int], edges: dict[tuple[int, int], int], generator: torch.Generator
    ) -> tuple[int, int, list[tuple[int, int, int]]] | None:
        for s in torch.randperm(len(ids), generator=generator).tolist():
            dist, count = _unique_shortest(edges, ids[s])
            goals = sorted(g for g, d in dist.items() if 1 <= d <= self.max_path and count[g] == 1)
            if goals:
                goal = goals[int(torch.randint(0, len(goals), (1,), generator=generator))]
                return ids[s], goal, _path(edges, ids[s], goal, dist)
        return None

    def _targets(self, path: list[tuple[int, int, int]]) -> Tensor:
        targets = torch.full((self.max_path, 3), -1, dtype=torch.long)
        if path:
            targets[: len(path)] = torch.tensor(path)
        return targets

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        self._check_length(length)
        edges_n = self.degree * length
        inputs = torch.zeros(batch_size, edges_n + 1 + self.max_path, self.input_size)
        targets = torch.zeros(batch_size, self.max_path, 3, dtype=torch.long)
        for b in range(batch_size):
            found = None
            while found is None:
                ids, edges = self._graph(length, generator)
                found = self._query(ids, edges, generator)
            start, goal, path = found
            inputs[b, :edges_n] = self._edge_steps(edges, generator)
            inputs[b, edges_n, start] = inputs[b, edges_n, self.ids + goal] = inputs[b, edges_n, self.query_flag] = 1.0
            inputs[b, edges_n + 1 :, self.answer_flag] = 1.0
            targets[b] = self._targets(path)
        return Batch(inputs, targets, length)

    def batch_from_inputs(self, inputs: Tensor) -> Batch:
        edges_n, steps = self._split(inputs)
        _need(steps == self.max_path, f"shortest_path inputs have {self.max_path} answer steps, got {steps}")
        targets = torch.zeros(inputs.shape[0], steps, 3, dtype=torch.long)
        for b in range(inputs.shape[0]):
            edges = self._decode_edges(inputs[b, :edges_n])
            start = int(inputs[b, edges_n, : self.ids].argmax())
            goal = int(inputs[b, edges_n, self.ids : 2 * self.ids].argmax())
            dist, count = _unique_shortest(edges, start)
            _need(goal in dist and 1 <= dist[goal] <= self.max_path and count[goal] == 1, "no unique shortest path")
            targets[b] = self._targets(_path(edges, start, goal, dist))
        return Batch(inputs, targets, edges_n // self.degree)


PAPER_TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (
        RepeatCopyTask,
        AssociativeRecallTask,
        PrioritySortTask,
        KeyValueTask,
        GraphTraversalTask,
        ShortestPathTask,
    )
}
