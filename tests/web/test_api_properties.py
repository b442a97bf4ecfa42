"""Property-based run over the OpenAPI spec (schemathesis, in-process on the ASGI app): whatever
the parameters, no 5xx, every status documented and every body as the spec says.

Each operation gets a bounded number of generated requests, so the run takes seconds.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from app.web.app import create_app
from app.web.readmodel import ReadModel
from tests.web.conftest import Arena

EXAMPLES_PER_OPERATION = 12


def test_no_operation_gives_a_server_error_or_breaks_its_schema(
    arena: Arena, read_model: ReadModel
) -> None:
    app = create_app(read_model, default_run=arena.result.run_id)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, "every nof1 and v1 endpoint is in the spec"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()
