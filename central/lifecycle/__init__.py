"""The lifecycle, pure: what a job, a node and a deployment are and how events change
them (``jobs``, ``nodes``, ``deployments``: ``anomaly``/``evolve``, used alike by
central's state and the read model), the decisions that produce those events
(``deciders``, and ``decide_node`` in ``nodes``), the refusal they raise (``errors``),
the scheduling policy (``policy``), and central's folded state (``state``)."""
