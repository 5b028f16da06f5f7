"""Training plumbing: loggers, callbacks, figures, leaderboards."""
