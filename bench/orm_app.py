"""The ORM reference: the endpoint written the straightforward SQLAlchemy ORM way.

Get the parent (locked), check it, count its children, build the child object, add it and the
activities, bump the parent, flush, commit, refresh, and let FastAPI serialise the child through
a ``response_model`` (``from_attributes``). Same transaction semantics as the service and the
bare reference; like the bare reference it has no authentication, idempotency or access log,
so the comparison with the service is, if anything, in the ORM's favour. It uses the project's
mapped classes and the project's engine factory (same pool and timeouts as the service).
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import uuid_utils.compat as uuid7
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, create_model
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aurion.conversations.models import Activity, Conversation
from aurion.db.engine import create_engine
from aurion.settings import Settings
from bench.yardstick import INHERITED_COLUMNS


class ChildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str


def _output_model() -> type[BaseModel]:
    """A read model with one field per mapped column, as one would write it by hand."""
    fields: dict[str, Any] = {}
    for column in Conversation.__table__.columns:
        if column.key == "workspace_id":
            continue
        kind: Any = column.type.python_type
        fields[column.key] = (kind | None if column.nullable else kind, ...)
    fields["messages"] = (list[dict[str, Any]], ...)
    fields["tab_counts"] = (dict[str, Any], ...)
    return create_model("ConversationOut", __config__=ConfigDict(from_attributes=True), **fields)


ConversationOut = _output_model()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def create_app() -> FastAPI:
    settings = Settings()
    workspace = os.environ["BENCH_WORKSPACE"]
    actor = os.environ["BENCH_ACTOR"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, os.environ["DATABASE_URL"])
        app.state.sessions = async_sessionmaker(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/api/v2/conversations/{conversation_id}/children",
        status_code=201,
        response_model=ConversationOut,
    )
    async def create_child(
        conversation_id: uuid.UUID, body: ChildIn, session: SessionDep
    ) -> dict[str, Any]:
        parent = await session.get(
            Conversation, (workspace, conversation_id), with_for_update={"key_share": True}
        )
        if parent is None or parent.deleted_at is not None:
            raise HTTPException(404)
        if (
            parent.merged_into_id is not None
            or parent.is_spam
            or parent.archived_at is not None
            or parent.parent_id is not None
        ):
            raise HTTPException(409)
        siblings = await session.scalar(
            select(func.count())
            .select_from(Conversation)
            .where(
                Conversation.workspace_id == workspace,
                Conversation.parent_id == parent.id,
                Conversation.deleted_at.is_(None),
            )
        )
        if (siblings or 0) >= settings.max_children_per_parent:
            raise HTTPException(409)

        now = datetime.now(UTC)
        child = Conversation(
            workspace_id=workspace,
            id=uuid7.uuid7(),
            parent_id=parent.id,
            subject=body.subject,
            status="open",
            version=1,
            source="child",
            created_at=now,
            updated_at=now,
            assigned_at=now if parent.assignee_user_id or parent.assignee_team_id else None,
            **{c: copy.deepcopy(getattr(parent, c)) for c in INHERITED_COLUMNS},
        )
        session.add(child)
        await session.flush()
        activities = [
            Activity(
                workspace_id=workspace,
                id=uuid7.uuid7(),
                conversation_id=child.id,
                kind="created_from_parent",
                actor=actor,
                payload={"parent_id": str(parent.id)},
                created_at=now,
            ),
            Activity(
                workspace_id=workspace,
                id=uuid7.uuid7(),
                conversation_id=parent.id,
                kind="child_created",
                actor=actor,
                payload={"child_id": str(child.id), "subject": body.subject},
                created_at=now,
            ),
        ]
        if parent.status in ("resolved", "closed"):
            parent.status = "open"
            activities.append(
                Activity(
                    workspace_id=workspace,
                    id=uuid7.uuid7(),
                    conversation_id=parent.id,
                    kind="reopened",
                    actor=actor,
                    payload={"child_id": str(child.id)},
                    created_at=now,
                )
            )
        session.add_all(activities)
        parent.version += 1
        parent.updated_at = now
        await session.flush()
        await session.commit()
        await session.refresh(child)
        data = {c.key: getattr(child, c.key) for c in Conversation.__table__.columns}
        data["messages"] = []
        data["tab_counts"] = {"activities": 1, "has_resolution": False, "messages": 0, "related": 1}
        return data

    return app
