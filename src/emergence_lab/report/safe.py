"""Outputs that cannot be turned against their reader: values in HTML escaped, cells a
spreadsheet would execute neutralized in CSV, table and heading syntax escaped in Markdown. A
run's name, a group's label, a strategy: anything that comes from a store (which anyone with
access to an unauthenticated server can write) or a table goes through here."""

from __future__ import annotations

import html
import re

import pandas as pd

FORMULA = re.compile(r"^(=|@|\t|\r|[+-](?![\d.]))")  # what spreadsheets evaluate (OWASP)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a terminal's escapes, line breaks, NUL


def printable(value: object) -> object:
    """A value read from a store or a table, as one printable line: control characters (an
    escape sequence a terminal would run, a line break that forges a line) written as \\xNN."""
    if not isinstance(value, str):
        return value
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def csv_cell(value: object) -> object:
    """A cell a spreadsheet would run as a formula (leading =, @, tab, CR, or + / - not
    starting a number) gets a leading apostrophe; everything else is left as it is."""
    return f"'{value}" if isinstance(value, str) and FORMULA.match(value) else value


def for_csv(df: pd.DataFrame) -> pd.DataFrame:
    text = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c])]
    return df.assign(**{c: df[c].map(csv_cell) for c in text}) if text else df


def write_csv(df: pd.DataFrame, path) -> None:
    for_csv(df).to_csv(path, index=False)


def md_cell(value: object) -> object:
    """A Markdown table cell: pipes escaped, newlines folded (no row, no heading injected),
    HTML tags' angle brackets escaped."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\s*[\r\n]+\s*", " ", value).replace("|", "\\|").replace("<", "&lt;") \
        .replace(">", "&gt;")


def for_markdown(df: pd.DataFrame) -> pd.DataFrame:
    return df.map(md_cell)


def md_text(value: str) -> str:
    """A line of Markdown from a value: newlines folded, a leading heading mark escaped."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(value))
    return re.sub(r"^(\s*)([#>*+-])", r"\1\\\2", text).replace("<", "&lt;").replace(">", "&gt;")


def html_table(df: pd.DataFrame, links: dict[str, str] | None = None) -> str:
    """An HTML table with every value escaped; `links`: column -> link text, for columns of
    http(s) URLs (escaped into the href; any other value stays escaped text)."""
    cells = df.map(lambda v: html.escape(str(v)))
    for col, text in (links or {}).items():
        if col in df:
            cells[col] = [f'<a href="{html.escape(str(u))}">{html.escape(text)}</a>'
                          if str(u).startswith(("http://", "https://")) else html.escape(str(u))
                          for u in df[col]]
    return cells.to_html(index=False, border=0, escape=False)
