"""Bodies of the lifecycle operations: the partial update, the parent, the activity log."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, model_validator
from pydantic.fields import FieldInfo

from aurion.conversations.fields import (
    TIME_EXAMPLE,
    UUID_EXAMPLE,
    JsonObject,
    Status,
    Subject,
    Tag,
)
from aurion.conversations.schemas import ConversationCreate

PARENT_EXAMPLE = "0193b0a2-6b1d-7c0e-8e2d-1a7b3c4d5e6f"
# Fields of createConversation a PATCH may not change: where the conversation came from.
_NOT_PATCHABLE = ("source", "source_thread_id", "messages")
# Fields that cannot be null: a PATCH may leave them out, never clear them.
_NOT_NULLABLE: dict[str, Any] = {
    "subject": Subject,
    "status": Status,
    "tags": list[Tag],
    "custom_attrs": JsonObject,
}


class _PatchBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    is_spam: StrictBool = Field(  # type: ignore[assignment]
        default=None,
        description="Mark (true) or unmark (false) the conversation as spam; not null.",
        examples=[False],
    )
    archived: StrictBool = Field(  # type: ignore[assignment]
        default=None,
        description="Write-only: `true` archives the conversation (sets `archived_at` to now "
        "unless it is already archived), `false` unarchives it (clears `archived_at`); not null.",
        examples=[True],
    )

    @model_validator(mode="after")
    def _not_empty(self) -> _PatchBase:
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self


def _patch_field(name: str, field: FieldInfo) -> tuple[Any, FieldInfo]:
    # Absent means unchanged: every field defaults to None, which is never validated (so a
    # default never reaches the database); an explicit null is validated, and refused for the
    # fields that cannot be null.
    annotation = _NOT_NULLABLE.get(name, field.annotation)
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default" in extra:  # an empty list or object (documented)
        extra = {key: value for key, value in extra.items() if key != "default"} or None
    copy = FieldInfo.merge_field_infos(
        field, default=None, default_factory=None, json_schema_extra=extra
    )
    copy.annotation = annotation
    return annotation, copy


def _patch_model() -> type[_PatchBase]:
    fields = {
        name: _patch_field(name, field)
        for name, field in ConversationCreate.model_fields.items()
        if name not in _NOT_PATCHABLE
    }
    return create_model(  # type: ignore[call-overload, no-any-return]
        "ConversationPatch",
        __base__=_PatchBase,
        __doc__="Body of updateConversation: the fields to change, at least one. An absent "
        "field is unchanged; `null` clears a nullable one; `tags` and `custom_attrs` are "
        "replaced whole.",
        **fields,
    )


if TYPE_CHECKING:
    ConversationPatch = _PatchBase
else:
    ConversationPatch = _patch_model()

# The conversation columns a PATCH writes from its body (``archived`` is ``archived_at``).
PATCHABLE_COLUMNS: tuple[str, ...] = tuple(
    name for name in ConversationPatch.model_fields if name != "archived"
)


class ParentUpdate(BaseModel):
    """Body of setConversationParent."""

    model_config = ConfigDict(extra="forbid")

    parent_id: UUID | None = Field(
        description="The new parent's id (attach or move), or null (detach: the conversation "
        "becomes standalone).",
        examples=[PARENT_EXAMPLE],
    )


ActivityKind = Literal[
    "created",
    "created_from_parent",
    "child_created",
    "reopened",
    "updated",
    "resolved_with_parent",
    "resolved_automatically",
    "parent_changed",
    "child_attached",
    "child_detached",
    "child_deleted",
    "deleted",
    "parent_deleted",
]

# What each kind means and what its payload holds (the OpenAPI description lists them).
ACTIVITY_KINDS: dict[str, str] = {
    "created": "The conversation was created (`messages`: how many it started with).",
    "created_from_parent": "The conversation was created as a child (`parent_id`).",
    "child_created": "A child was created under it (`child_id`, `subject`).",
    "reopened": "A resolved or closed parent went back to `open` because of a child "
    "(`reason`: `child_created`, `child_reopened` or `child_attached`; `child_id`; "
    "`from_status`).",
    "updated": "Fields were changed by updateConversation (`changes`: "
    '`{"<field>": {"old": ..., "new": ...}}`; archiving shows as `archived_at`).',
    "resolved_with_parent": "Its parent was resolved or closed with the cascade, and it took "
    "the same status (`parent_id`, `from_status`).",
    "resolved_automatically": "Its last open child was resolved or closed and "
    "`AURION_AUTO_RESOLVE_PARENT` is on (`reason`: `all_children_resolved`, `child_id`).",
    "parent_changed": "setConversationParent attached, moved or detached it (`from`, `to`: "
    "parent ids or null).",
    "child_attached": "A conversation was attached to it as a child (`child_id`).",
    "child_detached": "A child was moved away or detached (`child_id`).",
    "child_deleted": "A child of it was deleted (`child_id`).",
    "deleted": "The conversation was deleted (soft delete; `children`: the ids detached).",
    "parent_deleted": "Its parent was deleted and it became standalone (`parent_id`).",
}


class Activity(BaseModel):
    """One entry of a conversation's activity log."""

    id: UUID = Field(description="The entry's id (UUID v7).", examples=[UUID_EXAMPLE])
    kind: ActivityKind = Field(
        description="What happened; every kind is explained in listConversationActivities.",
        examples=["updated"],
    )
    actor: str = Field(
        description="Who did it: the `sub` of the token of the request.", examples=["agent-1"]
    )
    payload: dict[str, Any] = Field(
        description="Details, by kind.",
        examples=[{"changes": {"status": {"old": "open", "new": "resolved"}}}],
    )
    created_at: datetime = Field(description="When (ISO 8601 UTC).", examples=[TIME_EXAMPLE])


class ActivityPage(BaseModel):
    """One page of the activity log, newest first."""

    items: list[Activity] = Field(description="The entries on this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page.",
        examples=[None],
    )
