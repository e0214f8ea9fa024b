"""Width-aware terminal layouts: identifiers are never folded, cut or split across lines.

The width is the console's at render time (a terminal's, else ``COLUMNS``, else 80 for a pipe).
Free text wraps at spaces only; a word longer than the line is printed whole and runs past it
(the report is printed with ``crop=False``), never folded. A table that does not fit drops its
low-value columns, then becomes one small stacked block of ``key: value`` lines per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.containers import Lines
from rich.control import strip_control_codes
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text

ID, TEXT = "id", "text"
GAP = "  "
PAIR_GAP = "   "


def _breaks(plain: str, width: int, indent: int, hang: int) -> Iterator[tuple[int, int, int]]:
    """(indent, start, end) of each line of ``plain`` wrapped at spaces to ``width`` (see :func:`lines_of`)."""
    offset, pad = 0, indent
    for paragraph in plain.split("\n"):
        start, stop = offset, offset + len(paragraph)
        while True:
            room = max(width - pad, 1)
            rest = plain[start:stop]
            if cell_len(rest) <= room:
                yield pad, start, stop
                break
            cut = rest.rfind(" ", 0, room + 1)
            if cut <= 0:  # a word longer than the line: printed whole, running past it
                cut = rest.find(" ", room)
                if cut < 0:
                    yield pad, start, stop
                    break
            yield pad, start, start + cut
            start += cut
            while start < stop and plain[start] == " ":
                start += 1
            pad = hang
            if start == stop:
                break
        offset, pad = stop + 1, hang


def lines_of(text: Text | str, width: int, indent: int = 0, hang: int | None = None) -> Lines:
    """``text`` wrapped at spaces to ``width``, ``indent`` spaces before the first line and ``hang`` before the
    others (default: ``indent``); words are never folded or cut."""
    text = Text(text) if isinstance(text, str) else text
    return Lines(_line(pad, _slice(text, start, end))
                 for pad, start, end in _breaks(text.plain, width, indent, indent if hang is None else hang))


def _slice(text: Text, start: int, end: int) -> Text:
    """``text[start:end]`` without ``Text.divide`` (which costs a dozen times more): its spans cut to the range."""
    if start == 0 and end == len(text):
        return text
    part = text.blank_copy(text.plain[start:end])
    part.spans = [Span(max(s, start) - start, min(e, end) - start, style)
                  for s, e, style in text.spans if min(e, end) > max(s, start)]
    return part


def wrap_plain(text: str, width: int, indent: int = 0, hang: int | None = None) -> list[str]:
    """The lines of :func:`lines_of` as plain strings (no ``Text`` made: many times faster)."""
    plain = strip_control_codes(text)
    return [(" " * pad + plain[start:end]).rstrip()
            for pad, start, end in _breaks(plain, width, indent, indent if hang is None else hang)]


def _line(pad: int, body: Text) -> Text:
    line = Text(" " * pad, no_wrap=True, overflow="ignore")
    line.append_text(body)
    line.rstrip()
    return line


def whole(text: str, style: str = "") -> Group:
    """One line that is never wrapped or cut (a bare top-level Text would lose ``no_wrap`` in ``Console.print``)."""
    return Group(Text(text, style=style, no_wrap=True, overflow="ignore"))


class Para:
    """Free text wrapped at spaces with a hanging indent, at the console's width."""

    def __init__(self, text: Text | str, indent: int = 0, hang: int | None = None) -> None:
        self.text, self.indent, self.hang = text, indent, hang

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Segments, not ``Text`` lines: rich would split, wrap and join each line again (no change: each is one
        line with ``overflow="ignore"``); a line with a tab is left to rich, which expands it."""
        width = options.max_width
        if isinstance(self.text, str) and "\t" not in self.text:
            for plain in wrap_plain(self.text, width, self.indent, self.hang):
                yield Segment(plain)
                yield Segment.line()
            return
        for line in lines_of(self.text, width, self.indent, self.hang):
            if "\t" in line.plain:
                yield line
            else:
                yield from line.render(console, end=line.end)


@dataclass(frozen=True)
class Col:
    """A table column: ``kind`` ID is never wrapped or cut; ``drop`` > 0 may be hidden when narrow (highest
    first); ``label`` names it in stacked blocks (default: the header); ``justify`` "right" for numbers;
    ``code``: its cells are identifiers to copy (code spans in Markdown and Jira); ``detail``: left out of a
    one-line-per-row summary."""

    header: str
    kind: str = ID
    drop: int = 0
    label: str = ""
    justify: str = "left"
    code: bool = False
    detail: bool = False

    @property
    def key(self) -> str:
        return self.label or self.header


def _words(s: str) -> int:
    return max((cell_len(w) for w in s.split()), default=0)


def _need(col: Col, cells: Sequence[str]) -> tuple[int, int]:
    """(minimum, natural) width of a column: IDs need their longest cell, text its longest word."""
    natural = max([cell_len(c) for c in cells] + [_words(col.header)])
    if col.kind == ID:
        return natural, natural
    return max([_words(c) for c in cells] + [_words(col.header), min(natural, 12)]), natural


def table_width(widths: Sequence[int]) -> int:
    """Width of a rich table without outer edges and padding 1: every cell +2, plus the separators."""
    return sum(widths) + 3 * len(widths) - 1


def fit(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int) -> tuple[list[int], list[int]] | None:
    """(shown column indexes, their widths) for the widest layout that fits ``width``; None if none does."""
    shown = list(range(len(columns)))
    needs = [_need(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: (-columns[i].drop, -i))
    while True:
        minimum = [needs[i][0] for i in shown]
        if table_width(minimum) <= width:
            widths = minimum[:]
            spare = width - table_width(minimum)
            for k, i in enumerate(shown):
                grow = min(needs[i][1] - widths[k], spare)
                widths[k] += grow
                spare -= grow
            return shown, widths
        if not droppable:
            return None
        shown.remove(droppable.pop(0))


class Records:
    """Rows as a table when it fits, with fewer columns when narrower, else one stacked block per row.

    Both are laid out here as plain lines, handed to rich as segments: rich's ``Table`` measures and renders
    every cell (about 1.5 ms a row, 1.5 s for 1,000 workers); this costs a few milliseconds.
    """

    def __init__(self, columns: Sequence[Col], rows: Sequence[Sequence[str]], title: int = 0) -> None:
        self.columns, self.rows, self.title = list(columns), [list(r) for r in rows], title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        layout = fit(self.columns, self.rows, width)
        if layout is None:
            yield from self.stacked(width)
            return
        shown, widths = layout
        yield from grid([self.columns[i] for i in shown], [[row[i] for i in shown] for row in self.rows], widths)
        hidden = [c.key for i, c in enumerate(self.columns) if i not in shown]
        if hidden:
            yield Para(Text(f"({', '.join(hidden)} hidden at {width} columns; a wider terminal or "
                            "--format markdown shows them)", style="dim"))

    def stacked(self, width: int) -> Iterator[Segment]:
        """Each row as its title value, then ``key: value`` pairs packed on lines of at most ``width``."""
        head = self.columns[self.title]
        for n, row in enumerate(self.rows):
            if n:
                yield Segment.line()
            yield from _plain(f"{head.key} {row[self.title]}", BOLD)
            pairs: list[str] = []
            for i, col in enumerate(self.columns):
                if i == self.title or row[i] in ("", "-"):
                    continue
                if col.kind == TEXT:
                    yield from _pack(pairs, width)
                    pairs = []
                    for line in wrap_plain(f"{col.key}: {row[i]}", width, indent=2, hang=4):
                        yield from _plain(line)
                else:
                    pairs.append(f"{col.key}: {row[i]}")
            yield from _pack(pairs, width)


BOLD = Style(bold=True)


def _plain(line: str, style: Style | None = None) -> Iterator[Segment]:
    """One whole line (never wrapped or cut: it may run past the width)."""
    yield Segment(line, style)
    yield Segment.line()


def grid(columns: Sequence[Col], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> Iterator[Segment]:
    """Rows in the look of a rich table without outer edges: bold header cells (several words wrap, aligned at
    the bottom), a heavy rule, then the rows. Text cells wrap at spaces; :func:`fit` made every column at least
    as wide as its identifiers and its longest word, so nothing is folded or cut."""
    header = [_cell(c.header, w) for c, w in zip(columns, widths, strict=True)]
    for line in _row_lines(header, widths, bottom=True):
        for k, part in enumerate(line):
            if k:
                yield Segment("┃")
            yield Segment(f" {part} ", BOLD)
        yield Segment.line()
    yield from _plain("╇".join("━" * (w + 2) for w in widths))
    for row in rows:
        cells = [_cell(v, w, c.kind == TEXT, c.justify == "right")
                 for c, v, w in zip(columns, row, widths, strict=True)]
        for line in _row_lines(cells, widths):
            yield from _plain("│".join(f" {part} " for part in line))


def _cell(value: str, width: int, wrap: bool = True, right: bool = False) -> list[str]:
    """A cell's lines (wrapped at spaces when ``wrap`` and too long, or at newlines), each padded to ``width``."""
    folded = "\n" in value or (wrap and cell_len(value) > width)
    lines = wrap_plain(value, width) if folded else [value]
    return [" " * (width - cell_len(line)) + line if right else line + " " * (width - cell_len(line))
            for line in lines]


def _row_lines(cells: list[list[str]], widths: Sequence[int], bottom: bool = False) -> Iterator[tuple[str, ...]]:
    """The lines of one row: its cells side by side, short cells padded with blanks (above them if ``bottom``)."""
    height = max(len(c) for c in cells)
    padded = [[" " * w] * (height - len(c)) + c if bottom else c + [" " * w] * (height - len(c))
              for c, w in zip(cells, widths, strict=True)]
    return zip(*padded, strict=True)


def _pack(pairs: list[str], width: int) -> Iterator[Segment]:
    """``key: value`` pairs, as many per line as fit (a pair is never split)."""
    line = ""
    for pair in pairs:
        if line and cell_len(line) + len(PAIR_GAP) + cell_len(pair) > width:
            yield from _plain(line)
            line = ""
        line = f"{line}{PAIR_GAP}{pair}" if line else f"  {pair}"
    if line:
        yield from _plain(line)


def one_line(fixed: Sequence[str], free: str, width: int, least: int = 8) -> str:
    """``fixed`` parts whole, then ``free`` cut with an ellipsis to fit ``width``; left out when fewer than
    ``least`` cells would remain for it."""
    head = GAP.join(fixed)
    room = width - cell_len(head) - len(GAP)
    if not free or room < least:
        return head
    if cell_len(free) > room:
        free = free[: room - 1].rstrip() + "…"
    return head + GAP + free
