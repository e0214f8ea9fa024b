"""Markdown prose (the findings catalogue) as report-document blocks, so that every renderer can show it."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

from rqdoctor.render.document import Block, Code, CodeBlock, Inline, Items, Line, Paragraph, Table
from rqdoctor.render.layout import TEXT, Col


def blocks(markdown: str) -> tuple[Block, ...]:
    """Paragraphs, bullet lists, code blocks and tables of ``markdown`` (emphasis dropped, links as their text
    followed by the address, raw HTML such as anchors left out)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    out: list[Block] = []
    items: list[Line] = []
    rows: list[list[str]] = []
    lists = 0
    cell = False
    for t in tokens:
        if t.type in ("bullet_list_open", "ordered_list_open"):
            lists += 1
        elif t.type in ("bullet_list_close", "ordered_list_close"):
            lists -= 1
            if not lists:
                out.append(Items(tuple(items)))
                items = []
        elif t.type in ("th_open", "td_open"):
            cell = True
        elif t.type in ("th_close", "td_close"):
            cell = False
        elif t.type == "tr_open":
            rows.append([])
        elif t.type == "table_close":
            out.append(Table(tuple(Col(h, TEXT) for h in rows[0]), tuple(tuple(r) for r in rows[1:])))
            rows = []
        elif t.type == "inline" and cell:
            rows[-1].append(plain_text(inline(t)))
        elif t.type == "inline" and lists:
            items.append(inline(t))
        elif t.type == "inline":
            out.append(Paragraph(inline(t)))
        elif t.type in ("fence", "code_block"):
            out.append(CodeBlock(tuple(t.content.rstrip("\n").splitlines())))
    return tuple(out)


def plain_text(line: Line) -> str:
    return "".join(p if isinstance(p, str) else p.text for p in line)


def inline(token: Token) -> Line:
    """Inline children as text and :class:`Code` parts."""
    parts: list[Inline] = []
    href = ""
    for c in token.children or []:
        if c.type == "text":
            parts.append(c.content)
        elif c.type == "code_inline":
            parts.append(Code(c.content))
        elif c.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif c.type == "link_open":
            href = str(c.attrs.get("href", ""))
        elif c.type == "link_close" and href:
            parts.append(f" ({href})")
    return tuple(parts)
