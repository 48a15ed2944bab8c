from __future__ import annotations

import pandas as pd

from petclf.core.safe_text import csv_cell, csv_safe, printable


def test_printable_escapes_terminal_controls_newlines_and_undecodable_bytes():
    assert printable("evil\x1b[2J\nline\udcff.jpg") == "evil\\x1b[2J\\nline\\xff.jpg"
    assert printable("Égypte_Mau 3.jpg") == "Égypte_Mau 3.jpg"
    assert printable("rtl\u202eexe.jpg") == "rtl\\u202eexe.jpg"  # a bidi override reverses what follows


def test_csv_cells_that_a_spreadsheet_would_run_are_defused():
    for text in ('=HYPERLINK("http://x")', "+1", "-cmd", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(text).startswith("'"), text
    assert csv_cell("cat") == "cat" and csv_cell(-0.5) == -0.5 and csv_cell(3) == 3


def test_csv_safe_covers_cells_index_and_columns():
    frame = pd.DataFrame({"=col": ["=a", "b"], "n": [-1.0, 2.0]}, index=["=x", "y"])
    safe = csv_safe(frame)
    assert list(safe.columns) == ["'=col", "n"] and list(safe.index) == ["'=x", "y"]
    assert list(safe["'=col"]) == ["'=a", "b"] and list(safe.n) == [-1.0, 2.0]
    assert list(frame.index) == ["=x", "y"]  # the original is left alone
