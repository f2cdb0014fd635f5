"""Requests that never became a purchase, for `fulfil rejected` and the console."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fulfilment.db import session_scope
from models import RejectedRequest

if TYPE_CHECKING:
    pass



def rejected_requests(*, limit: int = 50, request_id: str | None = None) -> list[RejectedRequest]:
    """Newest first."""
    with session_scope() as session:
        query = select(RejectedRequest).order_by(RejectedRequest.id.desc()).limit(limit)
        if request_id is not None:
            query = query.where(RejectedRequest.request_id == request_id)
        return list(session.scalars(query))


def rejected_request(rejection_id: int) -> RejectedRequest | None:
    with session_scope() as session:
        return session.get(RejectedRequest, rejection_id)


def rejection_view(rejected: RejectedRequest, *, with_body: bool = False) -> dict[str, Any]:
    """One rejected request as plain JSON (the raw body only on request: it is the sender's input)."""
    view: dict[str, Any] = {
        "id": rejected.id,
        "rejected_at": _iso(rejected.created_at),
        "request_id": rejected.request_id,
        "reason_code": rejected.reason_code,
        "reason": rejected.reason,
        "message_id": rejected.message_id,
    }
    if with_body:
        view["raw_body"] = rejected.raw_body
    return view


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None
