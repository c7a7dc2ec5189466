"""The cli's two consoles, opened here and nowhere else, and the ways a command prints.

Only the cli prints or exits. A command prints its result with `render` (as JSON with --json,
else as text lines), any other lines with `show` or `show_lines`, and its current step with
`progress`. A plain `str` line is printed as text, never read as markup: it may quote SQL,
paths or a database's names. A line meant as markup says so (`markup`); a rich `Table` or
`Text` is printed as rich renders it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

VERDICT_STYLE = {
    "PASS": "green",
    "FAIL": "bold red",
    "NOT_APPLICABLE": "yellow",
    "UNKNOWN": "bold yellow",
}


def markup(line: str) -> Text:
    """A line whose `[style]...[/]` tags are meant as rich markup."""
    return Text.from_markup(line)


def show_lines(lines: Iterable[RenderableType], *, end: str = "\n", console: Console = out) -> None:
    """Print each line as it comes (stdout unless `console=err`)."""
    for line in lines:
        if isinstance(line, str):
            console.print(line, markup=False, end=end)
        else:
            console.print(line, end=end)


def show(*lines: RenderableType, end: str = "\n", console: Console = out) -> None:
    """Print each line (stdout unless `console=err`)."""
    show_lines(lines, end=end, console=console)


def render(
    as_json: bool,
    doc: Callable[[], object],
    text: Iterable[RenderableType],
    *,
    ascii_json: bool = False,
    sort_keys: bool = False,
    end: str = "\n",
) -> None:
    """Print a result: with --json the document `doc()` (indented by two), else its text lines,
    each as it comes.

    `ascii_json` prints the document as `json.dumps` writes it (non-ASCII escaped); without it
    rich writes it (UTF-8, coloured on a terminal). Each command keeps the form it has always
    printed.
    """
    if not as_json:
        show_lines(text, end=end)
    elif ascii_json:
        show(json.dumps(doc(), indent=2, sort_keys=sort_keys))
    else:
        out.print_json(json.dumps(doc()), sort_keys=sort_keys)


@contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """Show the current step on an interactive stderr; stay silent when piped or in CI."""
    if not err.is_terminal:
        yield lambda _msg: None
        return
    with err.status("starting…") as status:
        yield lambda msg: status.update(msg)
