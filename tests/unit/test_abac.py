"""§11.2.2 ABAC (protocol/abac.py): the expression language and the rule verdict."""

from __future__ import annotations

from typing import Any

import pytest

from packetflow.protocol import abac

SPEC_RULE = abac.make_rule(
    "sensitive_data_access",
    "packet.metadata.classification == 'confidential'",
    ["user.clearance_level >= 'secret'", "reactor.security_zone == 'secure'",
     "time.hour >= 9 AND time.hour <= 17"],
    "allow_with_audit",
)  # fmt: skip


def attrs(classification: str = "confidential", clearance: str = "secret",
          zone: str = "secure", hour: int = 10) -> dict[str, Any]:  # fmt: skip
    user = {"clearance_level": clearance}
    return {"packet": {"metadata": {"classification": classification}}, "user": user,
            "principal": user, "reactor": {"security_zone": zone},
            "time": {"hour": hour}}  # fmt: skip


def test_spec_rule_allows_with_audit_pfap_11_2_2() -> None:
    verdict = abac.decide([SPEC_RULE], attrs())
    assert verdict == abac.Verdict(True, True, "sensitive_data_access")
    assert abac.decide([SPEC_RULE], attrs(clearance="top_secret")).allowed


@pytest.mark.parametrize(
    ("changes", "failed"),
    [({"clearance": "confidential"}, "user.clearance_level >= 'secret'"),
     ({"zone": "dmz"}, "reactor.security_zone == 'secure'"),
     ({"hour": 18}, "time.hour >= 9 AND time.hour <= 17"),
     ({"hour": 8}, "time.hour >= 9 AND time.hour <= 17")],
)  # fmt: skip
def test_spec_rule_denies_naming_the_failed_requirement(changes: dict[str, Any],
                                                        failed: str) -> None:  # fmt: skip
    verdict = abac.decide([SPEC_RULE], attrs(**changes))
    assert not verdict.allowed
    assert verdict.failed_requirement == failed


def test_rule_that_does_not_apply_leaves_rbac_alone() -> None:
    assert abac.decide([SPEC_RULE], attrs(classification="public", clearance="public")) is (
        abac.ALLOW_BY_DEFAULT
    )


def test_deny_rule_and_first_match_wins() -> None:
    deny = abac.make_rule("no_df_at_night", "packet.group == 'df' and time.hour < 6", [], "deny")
    allow = abac.make_rule("rest", "true", [], "allow")
    night = {"packet": {"group": "df"}, "time": {"hour": 3}}
    assert abac.decide([deny, allow], night) == abac.Verdict(False, True, "no_df_at_night")
    assert abac.decide([deny, allow], {**night, "time": {"hour": 12}}).rule_id == "rest"


@pytest.mark.parametrize(
    ("text", "value"),
    [("packet.priority > 5", True),
     ("packet.priority >= 7 && packet.priority <= 7", True),
     ("packet.group in ['df', 'cf']", True),
     ("packet.group not in ['df', 'cf']", False),
     ("not (packet.group == 'df')", False),
     ("!packet.missing", True),
     ("packet.missing == null", True),
     ("packet.missing > 3", False),  # null never orders
     ("packet.group > 3", False),  # nor do mixed types
     ("packet.flag == TRUE OR packet.priority < 0", True),
     ("packet.ratio == 0.5", True),
     ("packet.neg < -1", True),
     ('packet.group == "df"', True),
     ("'f' in packet.group", True),
     ("principal.roles in ['x']", False),
     ("packet.tags in ['a']", False)],
)  # fmt: skip
def test_expressions(text: str, value: bool) -> None:
    env = {"packet": {"priority": 7, "group": "df", "flag": True, "ratio": 0.5, "neg": -2,
                      "tags": ["a"]}, "principal": {"roles": ["x"]}}  # fmt: skip
    assert abac.evaluate(abac.parse(text), env) is value


def test_and_binds_tighter_than_or() -> None:
    env = {"packet": {"a": 1, "b": 2}}
    assert abac.evaluate(abac.parse("packet.a == 1 or packet.b == 3 and false"), env) is True
    assert abac.evaluate(abac.parse("(packet.a == 1 or packet.b == 3) and false"), env) is False


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [("packet.a ==", 11, "unexpected end"),
     ("packet.a == (1", 14, "expected ')'"),
     ("packet.a == 'abc", 12, "unterminated string"),
     ("packet.a @ 1", 9, "unexpected character '@'"),
     ("os.system == 1", 0, "unknown attribute root 'os'"),
     ("__import__('os')", 0, "unknown attribute root '__import__'"),
     ("packet.a in [1, packet.b]", 16, "literals only"),
     ("packet.a in [1 2]", 15, "expected ',' or ']'"),
     ("packet..a == 1", 0, "bad attribute path"),
     ("packet.a == 1 packet.b", 14, "unexpected"),
     ("", 0, "unexpected end"),
     ("packet.a == 1.2.3", 12, "bad number")],
)  # fmt: skip
def test_bad_syntax_is_a_clear_error_with_position(text: str, position: int,
                                                   message: str) -> None:  # fmt: skip
    with pytest.raises(abac.AbacSyntaxError) as info:
        abac.parse(text)
    assert info.value.position == position
    assert message in str(info.value)
    assert f"position {position}" in str(info.value)


def test_length_and_depth_are_bounded() -> None:
    with pytest.raises(abac.AbacSyntaxError, match="longer than"):
        abac.parse("packet.a == 1 and " * 100 + "true")
    with pytest.raises(abac.AbacSyntaxError, match="nested deeper"):
        abac.parse("(" * 40 + "true" + ")" * 40)
    with pytest.raises(abac.AbacSyntaxError, match="nested deeper"):
        abac.parse("not " * 40 + "true")
    abac.parse("(" * 10 + "true" + ")" * 10)  # reasonable nesting is fine
    with pytest.raises(abac.AbacSyntaxError, match="list longer"):
        abac.parse("packet.a in [" + ",".join(["1"] * 300) + "]")


def test_bad_action_is_refused() -> None:
    with pytest.raises(ValueError, match="action must be one of"):
        abac.make_rule("r", "true", [], "permit")


def test_time_attributes_are_utc() -> None:
    assert abac.time_attributes(0.0)["hour"] == 0
    assert abac.time_attributes(13 * 3600 + 61.0) == {"hour": 13, "minute": 1, "weekday": 3,
                                                      "timestamp": 13 * 3600 + 61.0}  # fmt: skip
