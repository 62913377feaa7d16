"""How the node words a job's failure: the code and retryable of each kind of error,
told apart by type (the one exception, XLA's out of memory, by its absl status)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from node.jobs import FAILED, outcome_of


def _xla_out_of_memory() -> BaseException:
    try:  # 16 TiB on the host: XLA refuses the allocation itself
        jnp.zeros((2**42,), jnp.float32).block_until_ready()
    except jax.errors.JaxRuntimeError as exc:
        return exc
    pytest.skip("this host allocated 16 TiB")


def test_xla_out_of_memory_is_507_and_retryable() -> None:
    outcome = outcome_of(_xla_out_of_memory())
    assert (outcome.status, outcome.error_code, outcome.retryable) == (FAILED, 507, True)
    assert outcome.error.startswith("out of memory: RESOURCE_EXHAUSTED")
    assert "lower batch_size" in outcome.error


def test_host_memory_error_is_507() -> None:
    assert outcome_of(MemoryError()).error_code == 507


def test_an_error_that_only_mentions_memory_is_a_bug_not_507() -> None:
    outcome = outcome_of(RuntimeError("Out of memory? RESOURCE_EXHAUSTED in a message of ours"))
    assert (outcome.error_code, outcome.retryable) == (500, False)
