"""A session's key in the state stores: the model, with API keys on the caller's namespace, the
id's kind and the id. The stores read the owner back from it (`owner_of_key`) for per-key bounds."""

from __future__ import annotations


def session_key(model: str, sequence_id: int | str, owner: str | None = None) -> str:
    """Integer and string ids live apart (uint64 42 is not "42"), each inside its model, and with
    API keys on inside the caller's namespace (`owner`, an API key's name: `seqserve.auth`)."""
    kind = "u" if isinstance(sequence_id, int) else "s"
    # '@' cannot begin a kind, so no id of a namespace can be read as one of another, or of none.
    namespace = "" if owner is None else f"@{owner}/"
    return f"{model}/{namespace}{kind}:{sequence_id}"


def owner_of_key(key: str) -> str | None:
    """The API key name a session key belongs to; None for a key made with authentication off."""
    _, _, rest = key.partition("/")
    if not rest.startswith("@"):
        return None
    return rest[1:].partition("/")[0]  # names cannot hold '/' (seqserve.auth)
