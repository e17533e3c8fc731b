"""The OpenAPI document (interfaces/http/openapi.json) matches the server: schemathesis generates
requests from it (valid and invalid bodies, odd path parameters), each signed like a real
client's, and checks every answer: never a 5xx, only documented status codes and content
types, and bodies that match the documented schemas."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import insert

from engine.db import init_db, make_engine, transaction
from engine.db.models import FIELD_ORDERS
from interfaces.http.cim import IntegrationApi, openapi_document
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from tests.engine.scheduler_helpers import make_config
from tests.engine.store_helpers import add_account

KEY = b"schemathesis-key"
CONFIG = f'[api.clients.cis]\nkey = "{KEY.decode()}"\nrole = "operator"\n'


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API served on 127.0.0.1 by a thread with its own event loop (the tests are sync)."""
    folder: Path = tmp_path_factory.mktemp("openapi")
    engine = make_engine(f"sqlite:///{folder / 'api.db'}", audit_key=b"k")
    init_db(engine)
    for n in ("A1", "A2"):
        add_account(engine, n)
    with transaction(engine) as session:  # work items for /cim/v1/WorkOrders (ids 1 and 2)
        for kind in ("reconnect", "disconnect"):
            session.execute(
                insert(FIELD_ORDERS).values(
                    account_no="A1",
                    meter_address="000000000001",
                    cause="relay_stuck",
                    evidence={},
                    created_at=datetime.now(UTC),
                    status="open",
                    kind=kind,
                )
            )
    config = make_config(CONFIG)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    found: dict[str, object] = {}

    async def start() -> None:
        hook = PaymentHook(engine, config, key=b"pay")
        app = hook.app(client_max_size=16 * 1024 * 1024)
        IntegrationApi(engine, config).install(app)
        found["runner"], url = await start_hook(hook, "127.0.0.1", 0, app=app)
        found["url"] = url.rsplit("/", 1)[0]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10)
    yield str(found["url"])
    asyncio.run_coroutine_threadsafe(found["runner"].cleanup(), loop).result(10)  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    engine.dispose()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_server_answers_as_its_openapi_document_says(
    case: schemathesis.Case, api_url: str
) -> None:
    kwargs = case.as_transport_kwargs(base_url=api_url)
    if "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()
    else:
        data = kwargs.pop("data", b"") or b""
        body = data if isinstance(data, bytes) else str(data).encode()
    stamp = int(time.time())
    headers = {
        **(kwargs.pop("headers", None) or {}),
        "Content-Type": "application/json",
        "X-Meterctl-Client": "cis",
        "X-Meterctl-Timestamp": str(stamp),
        "X-Meterctl-Signature": sign(KEY, stamp, body),
    }
    kwargs.pop("params", None) if not kwargs.get("params") else None
    response = requests.request(
        kwargs.pop("method"), kwargs.pop("url"), data=body or None, headers=headers,
        params=kwargs.get("params"), timeout=10,
    )  # fmt: skip
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
