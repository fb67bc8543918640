"""Admin endpoint of the state store (issue 9 item 1): which engine, where (password redacted), which schema."""

from __future__ import annotations

from broker.admin.ports import StoreInfo
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute
from broker.admin.wire import store_status_document

__all__ = ["store_routes"]


def store_routes(store: StoreInfo) -> tuple[AdminRoute, ...]:
    async def status(given: AdminInput) -> AdminOutput:
        return AdminOutput(store_status_document(await store.status()))

    return (AdminRoute("GET", "/store", status),)
