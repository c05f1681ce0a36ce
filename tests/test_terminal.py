"""What the CLI prints on a terminal: lines of their own beside the progress bars."""

from __future__ import annotations

import io
import sys

from tqdm import tqdm

from geocluster_dagster.terminal import echo


class _Copy:
    """The terminal as the bars hold it: another file object on the same screen (a dup of
    the terminal's descriptor), which tqdm.write(file=sys.stderr) does not know to clear."""

    def __init__(self, screen: io.StringIO) -> None:
        self.screen = screen

    def write(self, text: str) -> int:
        return self.screen.write(text)

    def flush(self) -> None:
        pass


def _rendered(text: str) -> list[str]:
    """The screen's lines: a carriage return moves back to the line's start, text overwrites."""
    lines = []
    for raw in text.split("\n"):
        line = ""
        for part in raw.split("\r"):
            line = part + line[len(part) :]
        lines.append(line.rstrip())
    return lines


def test_a_line_printed_while_a_bar_runs_starts_on_a_line_of_its_own(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    bar = tqdm(
        total=10, desc="labelling the cluster map", file=_Copy(screen), leave=False, ncols=80
    )
    bar.update(5)
    echo("FAILED clusters: the reason", err=True)
    bar.close()
    assert "FAILED clusters: the reason" in _rendered(screen.getvalue())
