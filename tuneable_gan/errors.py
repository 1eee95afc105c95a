"""Errors a user can cause. The CLI prints each as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: shown as one line per problem, exit code 2."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(UserError):
    """An invalid config: unknown key, wrong type, out-of-range or unavailable value."""


class DataError(UserError):
    """A dataset that cannot be loaded: missing root, empty folder, unreadable archive."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or belongs to a different run."""


class Diverged(Exception):
    """A run whose losses became NaN or infinite. Not a user error: the run itself failed."""

    def __init__(self, step: int, values: dict[str, float]) -> None:
        self.step = step
        self.values = values
        bad = ", ".join(f"{k}={v}" for k, v in values.items())
        super().__init__(f"run diverged at step {step}: {bad}")


class DiskFullError(UserError):
    """A write that met a full disk (or an exhausted quota): one line naming the path."""
