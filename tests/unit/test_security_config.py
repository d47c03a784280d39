"""The security config file (security/config.py): roles, admin actions, ABAC rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from packetflow.protocol import abac
from packetflow.protocol.permissions import Authorizer
from packetflow.protocol.principals import PACKET_USER, Principal
from packetflow.security.config import SecurityConfigError, load

SPEC_TOML = """
admin_actions = ["cf:shutdown", "rm:scale"]

[roles.auditor]
permissions = ["reactor:monitor", "cf:health"]
rate_limits = { packets_per_minute = 60 }

[roles.packet_user]
permissions = ["cf:ping"]

[[abac.policy_rules]]
rule_id = "sensitive_data_access"
condition = "packet.metadata.classification == 'confidential'"
requirements = [
  "user.clearance_level >= 'secret'",
  "reactor.security_zone == 'secure'",
  "time.hour >= 9 AND time.hour <= 17",
]
action = "allow_with_audit"

[intrusion]
max_failures = 3
block_s = 30

[audit]
submits = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "security.toml"
    path.write_text(text)
    return path


def test_spec_rules_load_as_written(tmp_path: Path) -> None:
    config = load(write(tmp_path, SPEC_TOML))
    auth = Authorizer(config.policy)
    auditor = Principal("key:a", frozenset({"auditor"}), "api_key")
    user = Principal("key:u", frozenset({PACKET_USER}), "api_key")
    assert auth.allows(auditor, "cf:health") and not auth.allows(auditor, "cf:ping")
    assert auth.allows(user, "cf:ping") and not auth.allows(user, "df:transform")  # replaced
    assert config.policy.admin_actions == frozenset({"cf:shutdown", "rm:scale"})
    assert config.policy.rate_limits_of(auditor) == {"packets": 1.0}
    assert config.policy.rate_limits_of(user) == {}  # no rate_limits: unlimited
    assert [r.rule_id for r in config.rules] == ["sensitive_data_access"]
    assert config.intrusion.max_failures == 3 and config.intrusion.block_s == 30
    assert config.audit_submits is True
    env = {"packet": {"metadata": {"classification": "confidential"}},
           "user": {"clearance_level": "secret"}, "reactor": {"security_zone": "secure"},
           "time": {"hour": 12}}  # fmt: skip
    assert abac.decide(config.rules, env) == abac.Verdict(True, True, "sensitive_data_access")


@pytest.mark.parametrize(
    ("text", "message"),
    [("[[abac.policy_rules]]\nrule_id='r'\ncondition = \"packet.a == (1\"\naction='allow'",
      "abac.policy_rules[0] (r): expected ')' at position 14"),
     ("[[abac.policy_rules]]\ncondition = 'true'\nrequirements = ['user.x >>= 1']\n"
      "action='allow'", "unexpected '>=' at position 8"),
     ("[[abac.policy_rules]]\ncondition = 'true'\naction='permit'", "action must be one of"),
     ("[roles.x]\npermissions = ['nocolon']", "is not group:element"),
     ("[roles.x]\npermissions = 'cf:ping'", "must be a list"),
     ("[roles.x]\nrate_limits = { per_fortnight = 1 }", "rate_limits takes"),
     ("[roles.x]\nrate_limits = { packets_per_minute = -1 }", "positive number"),
     ("[intrusion]\nmax_fails = 3", "[intrusion]"),
     ("[surprise]\n", "unknown section"),
     ("roles = [", "not valid TOML")],
)  # fmt: skip
def test_bad_config_is_refused_at_load_naming_the_entry(tmp_path: Path, text: str,
                                                        message: str) -> None:  # fmt: skip
    with pytest.raises(SecurityConfigError) as info:
        load(write(tmp_path, text))
    assert message in str(info.value)
    assert "security.toml" in str(info.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")
