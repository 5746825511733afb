"""Slow steps say what they are doing. The layers below name the step; the CLI decides
how it shows (a spinner on a terminal's stderr) or that it does not (when piped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

_show: Callable[[str], AbstractContextManager] | None = None


def install(show: Callable[[str], AbstractContextManager] | None) -> None:
    """show(text) is entered for the duration of each step; None shows nothing."""
    global _show
    _show = show


@contextmanager
def step(text: str) -> Iterator[None]:
    if _show is None:
        yield
        return
    with _show(text):
        yield
