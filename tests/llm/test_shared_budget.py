"""One budget of model calls shared by every worker: parallel windows never exceed it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pytest

from app.errors import NoModelAvailableError
from app.evaluation.limiter import BudgetManager, SharedCallBudget
from app.llm import QuotaTracker
from app.llm.quota import BUDGET_SPENT, CallBudget
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm.conftest import FrozenClock
from tests.llm.test_fallback import A, B, ask_chain

Server = Callable[..., FakeOpenAIServer]


def take_many(budget: CallBudget, count: int) -> int:
    """Take `count` calls of modelscope:A in this (worker) process; return how many were given."""
    return sum(budget.take("modelscope", A) for _ in range(count))


def test_workers_of_a_pool_share_one_budget() -> None:
    """Budget 25 for A; four worker processes each try 10 calls: 25 are given in all, never
    more. A model without a figure is not limited."""
    context = multiprocessing.get_context("spawn")
    with BudgetManager(ctx=context) as manager:
        budget = manager.SharedCallBudget({("modelscope", A): 25})  # type: ignore[attr-defined]
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            given = list(pool.map(take_many, [budget] * 4, [10] * 4))
        assert sum(given) == 25
        assert budget.left("modelscope", A) == 0
        assert budget.take("modelscope", B) is True


def test_a_spent_budget_skips_the_model_without_sending_a_request(
    fake_server: Server, clock: FrozenClock
) -> None:
    """Budget 1 for A: the first call is sent; the second moves to B without a request to A;
    with B spent too (budget 0), the chain holds without any request."""
    server = fake_server("modelscope")
    quota = QuotaTracker(clock=clock, budget=SharedCallBudget({("modelscope", A): 1}))
    assert ask_chain(server, [A, B], quota).model == A
    assert ask_chain(server, [A, B], quota).model == B
    assert len(server.requests_for(A)) == 1

    spent = QuotaTracker(
        clock=clock, budget=SharedCallBudget({("modelscope", A): 0, ("modelscope", B): 0})
    )
    with pytest.raises(NoModelAvailableError, match="spent"):
        ask_chain(server, [A, B], spent)
    assert len(server.requests_for(A)) == 1 and len(server.requests_for(B)) == 1
    assert "shared by every worker" in BUDGET_SPENT
