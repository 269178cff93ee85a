"""The life of a hierarchy (SPEC §8): update, resolve, reopen, attach, move, detach, delete,
and the activity log. Each write is one statement, like child creation."""
