"""One-line descriptions of errors, for the command line and the bridge's JSON replies."""

from __future__ import annotations

__all__ = ["one_line_message"]


def one_line_message(exc: BaseException) -> str:
    """``exc`` as one line.

    A pydantic ``ValidationError`` (several lines: a count, then each field, its message
    and a documentation link) becomes ``invalid setting FIELD: MESSAGE (got VALUE); ...``;
    any other exception its message with line breaks folded (or its type's name when it
    has no message).
    """
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):
        parts = []
        for error in errors():
            where = ".".join(str(part) for part in error.get("loc", ()))
            text = f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
            if "input" in error and not isinstance(error["input"], dict):
                text += f" (got {error['input']!r:.60})"
            parts.append(text)
        return "invalid setting " + "; ".join(parts)
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
