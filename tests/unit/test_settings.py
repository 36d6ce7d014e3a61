"""The operator's settings: what an admin writes in the settings ConfigMap is checked at start,
with the setting named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmdeploy.controller.settings import OperatorSettings


def test_watched_namespaces_are_names() -> None:
    assert OperatorSettings(namespaces="team-a, team-b").namespaces == ["team-a", "team-b"]
    for bad in ("team-*", "Foo_Bar"):
        with pytest.raises(ValidationError, match="namespaces"):
            OperatorSettings(namespaces=bad)


def test_keda_credentials_for_the_default_endpoint_and_only_one_default() -> None:
    settings = OperatorSettings(
        prometheus_url="http://prom:9090",
        prometheus_keda_authentication="prom-auth",
        prometheus_keda_auth_modes="bearer",
    )
    target = settings.prometheus_targets()["default"]
    assert (target.url, target.keda_authentication, target.keda_auth_modes) == (
        "http://prom:9090",
        "prom-auth",
        "bearer",
    )
    with pytest.raises(ValidationError, match="set one of them"):
        OperatorSettings(
            prometheus_url="http://prom:9090",
            prometheus_endpoints={"default": {"url": "http://other:9090"}},
        )


def test_keda_fields_of_a_named_endpoint_are_checked_under_the_names_the_admin_writes() -> None:
    endpoints = {"team-a": {"url": "https://prom-a:9090", "kedaAuthModes": "oauth"}}
    with pytest.raises(ValidationError) as raised:
        OperatorSettings(prometheus_endpoints=endpoints)
    assert "kedaAuthModes" in str(raised.value)
