"""User-facing errors: raised for bad input, reported by the CLIs as one line."""


class UserError(ValueError):
    """Bad input from the user (config value, file, checkpoint); the message says how to fix it."""
