"""Read PromQL just far enough to check it against darkroom's metrics.

Not a parser (promtool checks the syntax): a scanner that finds each series
selector, `name{label="value", ...}`, in a query, skipping strings, range
brackets, function names and the label lists of by/without/on/ignoring/group_*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<brace>\{)
    |(?P<range>\[[^\]]*\])
    |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)
    |(?P<variable>\$\w+)
    |(?P<ident>[A-Za-z_:][\w:]*)
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_MATCHER = re.compile(
    r"""\s*(?P<label>[A-Za-z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?"""
)
# Words followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators may be written `sum by (x) (...)`: not followed by "(".
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def literal_values(self) -> list[str] | None:
        """The values an `=` or a plain alternation `=~"a|b"` names; None for other regexes."""
        if self.op == "=":
            return [self.value]
        if self.op == "=~" and re.fullmatch(r"[\w-]+(\|[\w-]+)*", self.value):
            return self.value.split("|")
        return None


@dataclass(frozen=True)
class Selector:
    metric: str | None
    matchers: tuple[Matcher, ...]
    # Where the selector starts in the query.
    position: int


def selectors(query: str) -> list[Selector]:
    """Every series selector in `query`, in order."""
    found: list[Selector] = []
    pos = 0
    while pos < len(query):
        token = _TOKEN.match(query, pos)
        assert token is not None
        kind, pos = token.lastgroup, token.end()
        if kind == "brace":
            matchers, pos = _matchers(query, pos)
            found.append(Selector(None, matchers, token.start()))
        elif kind == "ident":
            pos = _after_ident(query, token, pos, found)
    return found


def metric_names(query: str) -> set[str]:
    return {s.metric for s in selectors(query) if s.metric is not None}


def _after_ident(query: str, token: re.Match[str], pos: int, found: list[Selector]) -> int:
    word = token.group()
    rest = query[pos:].lstrip()
    skipped = len(query) - pos - len(rest)
    if word in _LABEL_LISTS:
        return _skip_label_list(query, pos + skipped) if rest.startswith("(") else pos
    if word in _AGGREGATIONS or word in _KEYWORDS or rest.startswith("("):
        return pos
    matchers: tuple[Matcher, ...] = ()
    if rest.startswith("{"):
        matchers, pos = _matchers(query, pos + skipped + 1)
    found.append(Selector(word, matchers, token.start()))
    return pos


def _matchers(query: str, pos: int) -> tuple[tuple[Matcher, ...], int]:
    """The matchers of a selector body starting at `pos` (just after "{"), and the end."""
    matchers = []
    while True:
        match = _MATCHER.match(query, pos)
        if match is None:
            break
        value = match["value"][1:-1].encode().decode("unicode_escape")
        matchers.append(Matcher(match["label"], match["op"], value))
        pos = match.end()
    closing = query.index("}", pos)
    assert not query[pos:closing].strip(), f"cannot read the matchers at {query[pos:closing]!r}"
    return tuple(matchers), closing + 1


def _skip_label_list(query: str, pos: int) -> int:
    return query.index(")", pos) + 1


def grouping_labels(query: str, position: int) -> list[str] | None:
    """The `by (...)` labels of the aggregation that directly wraps the selector at
    `position` when it is a max (max(...) gives []), else None."""
    before = query[:position].rstrip()
    wrapped = re.search(r"\bmax\s*(?:by\s*\((?P<by>[^)]*)\)\s*)?\(\s*$", before)
    if wrapped is None:
        return None
    return [label.strip() for label in (wrapped["by"] or "").split(",") if label.strip()]
