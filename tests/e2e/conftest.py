"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import reachable

PG_URL = os.environ.get("STREAMYOLO_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str | None]:
    """A database of its own on the PostgreSQL server, when one runs (else None: that store is left out)."""
    if not reachable("127.0.0.1", 5432) and "STREAMYOLO_PG_URL" not in os.environ:
        yield None
        return
    import psycopg

    name = f"streamyolo_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
