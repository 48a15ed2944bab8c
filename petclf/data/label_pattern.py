"""Labels from file names by a regular expression, with a time limit when the pattern is a stranger's.

A pattern stored in a model's petclf.json comes from whoever made the model: it is matched in a child interpreter
that is killed after ``UNTRUSTED_PATTERN_TIMEOUT_S``, because Python's ``re`` has no time-out.

Why not the ``regex`` package's ``timeout=`` (measured, regex 2026.12.2): it does stop backtracking within its
bound (``^(a|a)*$`` on 41 characters: TimeoutError after 0.50/1.00/2.00 s of CPU for timeout 0.5/1/2), but the
limit covers matching only, not compiling, and compiling counted repeats takes memory that grows with their
product: ``regex.compile("(a{1000}){1000}")`` took 275 MiB and 0.29 s (``re``: 13 MiB, 0.00 s), and
``regex.compile("(a{60000}){60000}")`` — 18 characters a model file may carry — had the process killed for memory.
``re`` compiles such repeats in constant space, so the parent can check the pattern itself, and whatever the child
does is ended with it. google-re2 would be linear-time and memory-capped, but it refuses backreferences and
lookarounds that ``re`` patterns (and so stored models) may use.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from petclf.core.errors import DataError, UsageError

__all__ = ["DEFAULT_LABEL_PAT", "UNTRUSTED_PATTERN_TIMEOUT_S", "compile_label_pattern", "match_labels"]

#: Everything before the last ``_<digits>`` of the file name: keeps underscores and capitals
#: (``american_pit_bull_terrier_12.jpg`` → ``american_pit_bull_terrier``).
DEFAULT_LABEL_PAT = r"^(.+)_\d+\.[^.]+$"
#: Seconds that matching all file names with a label pattern from elsewhere (a model's
#: petclf.json) may take before it is given up as runaway backtracking.
UNTRUSTED_PATTERN_TIMEOUT_S = 10.0


def compile_label_pattern(label_pat: str) -> re.Pattern:
    """``label_pat`` compiled, or a UsageError when it is not a regular expression with a group for the label.

    Example: ``compile_label_pattern(DEFAULT_LABEL_PAT).search("pug_1.jpg").group(1)`` → ``'pug'``.
    """
    try:
        pattern = re.compile(label_pat)
    except re.error as err:
        raise UsageError(f"label_pat {label_pat!r} is not a valid regular expression: {err}.") from None
    if pattern.groups < 1:
        raise UsageError(f"label_pat {label_pat!r} has no group: put the label in parentheses, "
                         f"e.g. {DEFAULT_LABEL_PAT!r}.")
    return pattern


def match_labels(pattern: re.Pattern, names: Sequence[str], *, trusted: bool, folder: Path) -> list[str | None]:
    """The first group of ``pattern`` in each name (None: no match); an untrusted pattern (from a model file) is
    matched in a child process under a time limit, and a DataError names ``folder`` when it runs out.

    Example: ``match_labels(compile_label_pattern(r"^(.+)_\\d+"), ["pug_1.jpg"], trusted=False, folder=root)``
    → ``['pug']``.
    """
    if trusted:
        return [match.group(1) if match else None for match in map(pattern.search, names)]
    return _labels_in_child(pattern.pattern, list(names), folder)


# Run by a child interpreter: the labels (first group, or None) of the names, as JSON.
_MATCH_CODE = """
import json, re, sys
pattern, names = json.load(sys.stdin)
search = re.compile(pattern).search
labels = []
for name in names:
    match = search(name)
    labels.append(match.group(1) if match else None)
json.dump(labels, sys.stdout)
"""


def _labels_in_child(pattern: str, names: list[str], folder: Path) -> list[str | None]:
    """The first group of ``pattern`` in each name (None: no match), matched in a child process.

    The child is killed after ``UNTRUSTED_PATTERN_TIMEOUT_S``: Python's ``re`` has no time-out, and
    a stranger's pattern such as ``^(\\w+)+_\\d+\\.jpg$`` backtracks for minutes on a 32-character name.
    """
    budget = UNTRUSTED_PATTERN_TIMEOUT_S
    try:
        # ASCII JSON both ways, so any file name (even undecodable bytes) survives the pipe.
        done = subprocess.run([sys.executable, "-I", "-c", _MATCH_CODE], input=json.dumps([pattern, names]),
                              capture_output=True, encoding="utf-8", errors="replace", timeout=budget,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"the label pattern {pattern!r} stored in the model took more than {budget:g} s on the "
                        f"file names of {folder}; pass --label-pat to use a pattern of your own.") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"the label pattern {pattern!r} stored in the model failed on the file names of {folder} "
                        f"({why}); pass --label-pat to use a pattern of your own.")
    return json.loads(done.stdout)
