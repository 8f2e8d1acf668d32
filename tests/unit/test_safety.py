from __future__ import annotations

import pytest

from tests.safety import UnsafeTarget, check_target, is_loopback


def test_demo_project_on_loopback_is_accepted() -> None:
    check_target("demo-simplytalk-test", ["127.0.0.1:8080", "localhost:9099", "[::1]:8085"])


@pytest.mark.parametrize("project", ["simplytalk-prod", "my-demo-project", ""])
def test_a_project_that_is_not_demo_is_refused(project: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_target(project, ["127.0.0.1:8080"])


@pytest.mark.parametrize("host", ["10.0.0.5:8080", "firestore.googleapis.com:443", "192.168.1.2:9099"])
def test_a_host_off_loopback_is_refused(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UnsafeTarget):
        check_target("demo-x", ["127.0.0.1:8080", host])
