from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from simplytalk.config import Settings
from simplytalk.errors import ConfigError


def test_defaults_are_the_local_demo_stack() -> None:
    s = Settings.from_env({})

    assert s.project_id == "demo-simplytalk"
    assert s.is_demo
    assert s.region == "us-central1"
    assert s.firestore_emulator_host == "127.0.0.1:8080"
    assert s.auth_emulator_host == "127.0.0.1:9099"


def test_a_real_project_uses_no_emulator() -> None:
    s = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "simplytalk-prod"})

    assert not s.is_demo
    assert s.firestore_emulator_host is None
    assert s.auth_emulator_host is None


@pytest.mark.parametrize("var", ["FIREBASE_AUTH_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"])
def test_emulators_are_refused_for_a_real_project(var: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"GOOGLE_CLOUD_PROJECT": "simplytalk-prod", var: "127.0.0.1:1"})


def test_environment_overrides_defaults() -> None:
    s = Settings.from_env({"SIMPLYTALK_PROJECT": "demo-x", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
                           "SIMPLYTALK_MAX_BODY_BYTES": "10"})

    assert (s.project_id, s.firestore_emulator_host, s.max_body_bytes) == ("demo-x", "127.0.0.1:9", 10)


def test_bad_number_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"SIMPLYTALK_MAX_BODY_BYTES": "lots"})


def test_the_local_openai_is_for_demo_projects_only() -> None:
    assert Settings.from_env({}).openai_base_url == "http://127.0.0.1:12112/v1"
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "simplytalk-prod"}).openai_base_url is None
    with pytest.raises(ConfigError):
        Settings.from_env({"GOOGLE_CLOUD_PROJECT": "simplytalk-prod", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})


def test_no_free_minutes_is_a_setting_but_no_concurrent_calls_is_not() -> None:
    assert Settings.from_env({"SIMPLYTALK_FREE_MINUTES": "0"}).free_minutes == 0
    with pytest.raises(ConfigError):
        Settings.from_env({"SIMPLYTALK_MAX_CONCURRENT_CALLS": "0"})


def test_only_a_realtime_model_we_allow_is_configured() -> None:
    assert Settings.from_env({"SIMPLYTALK_REALTIME_MODEL": "gpt-realtime-2"}).realtime_model == "gpt-realtime-2"
    with pytest.raises(ConfigError):
        Settings.from_env({"SIMPLYTALK_REALTIME_MODEL": "gpt-realtime"})  # OpenAI has announced its shutdown


def test_deployed_instances_refuse_the_local_defaults_at_start_up() -> None:
    with pytest.raises(ConfigError, match="K_SERVICE"):
        Settings.from_env({"K_SERVICE": "token-usage"})
    with pytest.raises(ConfigError, match="K_SERVICE"):
        Settings.from_env({"K_SERVICE": "token-usage", "SIMPLYTALK_PROJECT": "demo-x",
                           "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8080"})
    assert Settings.from_env({"K_SERVICE": "token-usage", "SIMPLYTALK_PROJECT": "simplytalk-prod"}).stripe_api_key \
        is None  # no local secret either
    functions = Path(__file__).resolve().parents[2] / "functions"
    started = subprocess.run([sys.executable, "-c", "import main"], cwd=functions, capture_output=True, text=True,
                             env={"PATH": "", "K_SERVICE": "token-usage", "SIMPLYTALK_PROJECT": "demo-simplytalk"})
    assert started.returncode != 0 and "K_SERVICE" in started.stderr
