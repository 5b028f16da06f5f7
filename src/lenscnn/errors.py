"""User-facing errors: raised for bad input, reported by the CLIs as one line."""


class UserError(ValueError):
    """Bad input from the user (config value, file, checkpoint); the message says how to fix it."""


def one_line(exc: BaseException, limit: int = 200, *, with_type: bool = False) -> str:
    """An exception as one line of text, for a :class:`UserError` message, a log line or a table cell.

    The message with its whitespace (newlines included) collapsed, shortened to ``limit`` characters
    (then ending in ``...``); a ``KeyError`` says ``missing <key>``; an empty message gives the
    exception's type name. ``with_type`` puts the type name first (``ValueError: <message>``).
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    name = type(exc).__name__
    if not text:
        return name
    if isinstance(exc, KeyError):
        text = f"missing {text}"
    return f"{name}: {text}" if with_type else text
