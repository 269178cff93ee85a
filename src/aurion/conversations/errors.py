"""Refusals of the conversations service, each with its status and stable code."""

from aurion.errors import AppError


class ConversationNotFound(AppError):
    status_code = 404
    code = "conversation_not_found"
    message = "Conversation not found."


class ParentMerged(AppError):
    status_code = 409
    code = "parent_merged"
    message = "The conversation was merged into another one."


class ParentIsSpam(AppError):
    status_code = 409
    code = "parent_is_spam"
    message = "The conversation is marked as spam."


class ParentArchived(AppError):
    status_code = 409
    code = "parent_archived"
    message = "The conversation is archived."


class ParentIsChild(AppError):
    status_code = 409
    code = "parent_is_child"
    message = "The conversation is itself a child; children are one level deep."


class ChildrenLimitReached(AppError):
    status_code = 409
    code = "children_limit_reached"
    message = "The conversation already has the maximum number of children."


class PreconditionFailed(AppError):
    status_code = 412
    code = "precondition_failed"
    message = "If-Match does not match the conversation's current ETag."
