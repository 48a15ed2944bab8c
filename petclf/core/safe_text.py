"""Text from file and class names made safe to print and to put in a spreadsheet.

File names are chosen by whoever made the folder: they can hold terminal escape sequences
(which clear the screen or forge a line of output), newlines, bytes that are not UTF-8, or
text that a spreadsheet runs as a formula when it opens a CSV file.
"""
from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["printable", "one_line", "csv_cell", "csv_safe"]

# Control characters, format characters (bidi overrides), lone surrogates and line/paragraph separators.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# OWASP's list of first characters that make a spreadsheet cell a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (Python's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char.encode("unicode_escape").decode("ascii")


def printable(text: object) -> str:
    """``text`` with control characters, newlines and undecodable bytes written as escapes.

    Example: ``printable("bad\\x1b[2J\\udcff.jpg")`` → ``'bad\\\\x1b[2J\\\\xff.jpg'``.
    """
    text = str(text)
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def one_line(text: object, *, limit: int = 300) -> str:
    """``text`` (an error from a library, say) folded onto one printable line of at most ``limit`` characters.

    Example: ``one_line("bad header\n  at offset 8")`` → ``'bad header at offset 8'``.
    """
    text = printable(" ".join(str(text).split()))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def csv_cell(value: object) -> object:
    """A value for a CSV cell: text made printable, and a leading ``= + - @`` (tab, CR) defused by a quote.

    Numbers are left alone, so ``-0.5`` stays a number.

    Example: ``csv_cell('=HYPERLINK("http://x")_1.jpg')`` → ``'\\'=HYPERLINK("http://x")_1.jpg'``.
    """
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_STARTS):
        value = "'" + value
    return printable(value)


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, column names and index labels pass through ``csv_cell``.

    Example: ``csv_safe(per_class).to_csv("per_class.csv")``.
    """
    import pandas as pd  # noqa: PLC0415 - `petclf --help` imports this module and should not wait for pandas

    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):  # text is 'object' or 'str' depending on pandas
            out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(c) for c in out.columns]
    out.index = pd.Index([csv_cell(i) for i in out.index], name=out.index.name)
    return out
