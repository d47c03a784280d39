"""§11.2.2 attribute-based rules: a small expression language (never ``eval``) and the
first-matching-rule verdict over packet, principal, reactor and time attributes.

Language (how this works)
-------------------------
A hand-written tokenizer and recursive-descent parser turn a condition into an AST::

    expr    := or
    or      := and ( ("or" | "OR" | "||") and )*
    and     := unary ( ("and" | "AND" | "&&") unary )*
    unary   := ("not" | "NOT" | "!") unary | compare
    compare := operand ( ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand )?
    operand := string | number | true | false | null | path | list | "(" expr ")"
    list    := "[" ( literal ( "," literal )* )? "]"

Strings take single or double quotes (the spec writes ``'confidential'``); a path is dotted
names (``packet.metadata.classification``; ``user`` is the spec's name for the principal).
A missing attribute is ``null``; ordering comparisons with ``null`` or between different
types are false, never an error. Strings that are both clearance levels
(``CLEARANCE_LEVELS``) compare by level, so ``'top_secret' >= 'secret'`` holds.

A rule applies when its ``condition`` holds; then its ``requirements`` (all must hold)
decide: met, the rule's ``action`` (``allow``, ``allow_with_audit`` or ``deny``); unmet,
deny. The first applicable rule decides; with none, the RBAC verdict stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

# Limits (STYLE 5): conditions are policy lines written by people, not programs.
MAX_EXPRESSION_LENGTH: Final = 1024
MAX_DEPTH: Final = 32  # nesting of parentheses / not / operators
MAX_LIST_ITEMS: Final = 256

# Ordered security levels (§11.3.2's classification plus the usual clearance names).
CLEARANCE_LEVELS: Final[Mapping[str, int]] = {
    "public": 0, "internal": 1, "confidential": 2, "secret": 3, "top_secret": 4,
}  # fmt: skip

ACTIONS: Final = ("allow", "allow_with_audit", "deny")
ROOTS: Final = frozenset({"packet", "principal", "user", "reactor", "time"})


class AbacSyntaxError(ValueError):
    """A condition that does not parse; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {text!r}")
        self.position = position
        self.text = text


# ------------------------------------------------------------------------------ AST


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class Path:
    parts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = Lit | Path | Compare | BoolOp | Not

# ------------------------------------------------------------------------------ tokenizer

_OPS: Final = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",")
_KEYWORDS: Final = {"and": "and", "or": "or", "not": "not", "in": "in",
                    "true": True, "false": False, "null": None}  # fmt: skip


_SYMBOLS: Final = {"and": "&&", "or": "||", "not": "!"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "kw", "name", "str", "num", "lit" (true/false/null), "end"
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"":
            end = i + 1
            chars: list[str] = []
            while end < n and text[end] != c:
                if text[end] == "\\" and end + 1 < n:
                    end += 1
                chars.append(text[end])
                end += 1
            if end >= n:
                raise AbacSyntaxError("unterminated string", text, i)
            out.append(_Token("str", "".join(chars), i))
            i = end + 1
            continue
        if c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            end = i + 1
            while end < n and (text[end].isdigit() or text[end] == "."):
                end += 1
            raw = text[i:end]
            try:
                value: float | int = float(raw) if "." in raw else int(raw)
            except ValueError:
                raise AbacSyntaxError(f"bad number {raw!r}", text, i) from None
            out.append(_Token("num", value, i))
            i = end
            continue
        if c.isalpha() or c == "_":
            end = i
            while end < n and (text[end].isalnum() or text[end] in "_."):
                end += 1
            word = text[i:end]
            lowered = word.lower()
            if lowered in ("true", "false", "null"):
                out.append(_Token("lit", _KEYWORDS[lowered], i))
            elif lowered in _KEYWORDS:
                out.append(_Token("kw", lowered, i))
            else:
                parts = tuple(word.split("."))
                if any(not p for p in parts):
                    raise AbacSyntaxError(f"bad attribute path {word!r}", text, i)
                out.append(_Token("name", parts, i))
            i = end
            continue
        for op in _OPS:
            if text.startswith(op, i):
                out.append(_Token("op", op, i))
                i += len(op)
                break
        else:
            raise AbacSyntaxError(f"unexpected character {c!r}", text, i)
    out.append(_Token("end", None, n))
    return out


# ------------------------------------------------------------------------------ parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Token | None = None) -> AbacSyntaxError:
        tok = tok or self.peek()
        return AbacSyntaxError(message, self.text, tok.pos)

    @staticmethod
    def is_word(tok: _Token, word: str) -> bool:
        """``word`` as a keyword (any case) or its symbol (``&&``, ``||``, ``!``)."""
        if tok.kind == "kw":
            return bool(tok.value == word)
        return tok.kind == "op" and tok.value == _SYMBOLS[word]

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"expression nested deeper than {MAX_DEPTH}")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.peek().value!r}")
        return node

    def expr(self) -> Node:
        self.enter()
        try:
            return self.bool_op("or", self.and_)
        finally:
            self.depth -= 1

    def and_(self) -> Node:
        return self.bool_op("and", self.unary)

    def bool_op(self, word: str, sub: Any) -> Node:
        items = [sub()]
        while self.is_word(self.peek(), word):
            self.next()
            items.append(sub())
        return items[0] if len(items) == 1 else BoolOp(word, tuple(items))

    def unary(self) -> Node:
        if self.is_word(self.peek(), "not"):
            self.next()
            self.enter()
            try:
                return Not(self.unary())
            finally:
                self.depth -= 1
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
            self.next()
            return Compare(tok.value, left, self.operand())
        if tok.kind == "kw" and tok.value == "in":
            self.next()
            return Compare("in", left, self.operand())
        if tok.kind == "kw" and tok.value == "not":
            after = self.tokens[self.i + 1]
            if after.kind == "kw" and after.value == "in":
                self.i += 2
                return Compare("not in", left, self.operand())
        return left

    def operand(self) -> Node:
        tok = self.next()
        if tok.kind in ("str", "num", "lit"):
            return Lit(tok.value)
        if tok.kind == "name":
            if tok.value[0] not in ROOTS:
                raise self.fail(f"unknown attribute root {tok.value[0]!r} (one of "
                                f"{', '.join(sorted(ROOTS))})", tok)  # fmt: skip
            return Path(tok.value)
        if tok.kind == "op" and tok.value == "(":
            node = self.expr()
            if self.next().value != ")":
                raise self.fail("expected ')'", self.tokens[self.i - 1])
            return node
        if tok.kind == "op" and tok.value == "[":
            return self.list_(tok)
        if tok.kind == "end":
            raise self.fail("unexpected end of expression", tok)
        raise self.fail(f"unexpected {tok.value!r}", tok)

    def list_(self, start: _Token) -> Node:
        values: list[Any] = []
        if self.peek().kind == "op" and self.peek().value == "]":
            self.next()
            return Lit(tuple(values))
        while True:
            tok = self.next()
            if tok.kind in ("str", "num", "lit"):
                values.append(tok.value)
            else:
                raise self.fail("a list holds literals only", tok)
            if len(values) > MAX_LIST_ITEMS:
                raise self.fail(f"list longer than {MAX_LIST_ITEMS} items", start)
            sep = self.next()
            if sep.kind == "op" and sep.value == "]":
                return Lit(tuple(values))
            if not (sep.kind == "op" and sep.value == ","):
                raise self.fail("expected ',' or ']'", sep)


def parse(text: str) -> Node:
    """Parse a condition. Raises ``AbacSyntaxError`` (with the position) on bad input."""
    if not isinstance(text, str):
        raise AbacSyntaxError("a condition must be a string", repr(text), 0)
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise AbacSyntaxError(f"longer than {MAX_EXPRESSION_LENGTH} characters", text[:40],
                              MAX_EXPRESSION_LENGTH)  # fmt: skip
    return _Parser(text).parse()


# ------------------------------------------------------------------------------ evaluation


def _resolve(parts: tuple[str, ...], attrs: Mapping[str, Any]) -> Any:
    value: Any = attrs
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        else:
            return None
    return value


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        if a in CLEARANCE_LEVELS and b in CLEARANCE_LEVELS:
            return CLEARANCE_LEVELS[a], CLEARANCE_LEVELS[b]
        return a, b
    return None


def evaluate(node: Node, attrs: Mapping[str, Any]) -> Any:
    """The value of ``node`` against ``attrs`` (``{"packet": ..., "principal": ...}``)."""
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Path):
        return _resolve(node.parts, attrs)
    if isinstance(node, Not):
        return not evaluate(node.item, attrs)
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(evaluate(item, attrs) for item in node.items)
        return any(evaluate(item, attrs) for item in node.items)
    left = evaluate(node.left, attrs)
    right = evaluate(node.right, attrs)
    op = node.op
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op in ("in", "not in"):
        container = isinstance(right, tuple | list | frozenset | set)
        found = (container or (isinstance(right, str) and isinstance(left, str))) and (
            left in right
        )
        return found if op == "in" else not found
    pair = _ordered(left, right)
    if pair is None:
        return False
    a, b = pair
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


# ------------------------------------------------------------------------------ rules


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    condition: Node
    requirements: tuple[Node, ...]
    action: str  # one of ACTIONS
    requirement_texts: tuple[str, ...] = ()  # as written, to name the one that failed


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    audit: bool
    rule_id: str | None
    failed_requirement: str | None = None


ALLOW_BY_DEFAULT: Final = Verdict(True, False, None)


def make_rule(rule_id: str, condition: str, requirements: Sequence[str], action: str) -> Rule:
    """A rule from its config strings. Raises ``AbacSyntaxError`` or ``ValueError``."""
    if action not in ACTIONS:
        raise ValueError(f"rule {rule_id!r}: action must be one of {', '.join(ACTIONS)}, "
                         f"not {action!r}")  # fmt: skip
    return Rule(rule_id, parse(condition), tuple(parse(r) for r in requirements), action,
                tuple(requirements))  # fmt: skip


def decide(rules: Sequence[Rule], attrs: Mapping[str, Any]) -> Verdict:
    """The first applicable rule's verdict (module doc); ``ALLOW_BY_DEFAULT`` if none."""
    for rule in rules:
        if not evaluate(rule.condition, attrs):
            continue
        for index, req in enumerate(rule.requirements):
            if not evaluate(req, attrs):
                return Verdict(False, True, rule.rule_id, rule.requirement_texts[index])
        if rule.action == "deny":
            return Verdict(False, True, rule.rule_id)
        return Verdict(True, rule.action == "allow_with_audit", rule.rule_id)
    return ALLOW_BY_DEFAULT


def time_attributes(wall_s: float) -> dict[str, Any]:
    """``time.*`` for a wall-clock instant (UTC): hour, minute, weekday (0 = Monday)."""
    moment = datetime.fromtimestamp(wall_s, tz=UTC)
    return {"hour": moment.hour, "minute": moment.minute, "weekday": moment.weekday(),
            "timestamp": wall_s}  # fmt: skip
