from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devtools.deploy import build, commands, runtime_requirements
from devtools.manifest import load


def test_every_function_gets_one_deploy_command_with_its_trigger() -> None:
    manifest = load()

    cmds = commands(manifest, "my-project", Path("build/functions"))

    deploys = {c[3]: c for c in cmds if c[:3] == ["gcloud", "functions", "deploy"]}
    assert set(deploys) == {fn.name for fn in manifest.functions}
    for fn in manifest.functions:
        cmd = deploys[fn.name]
        assert f"--entry-point={fn.entry_point}" in cmd
        assert "--gen2" in cmd and "--project=my-project" in cmd
        assert any(a.startswith("--set-env-vars=") and "SIMPLYTALK_PROJECT=my-project" in a for a in cmd)
        if fn.trigger == "http":
            assert "--trigger-http" in cmd
        if fn.trigger == "firestore":
            assert f"--trigger-event-filters=type={fn.event_type}" in cmd
            assert f"--trigger-event-filters-path-pattern=document={fn.document}" in cmd
    assert cmds[-1][1:4] == ["deploy", "--only", "firestore:rules,firestore:indexes"]


def test_requirements_pin_every_runtime_dependency() -> None:
    pins = runtime_requirements()

    names = {p.split("==")[0].lower() for p in pins}
    assert {"functions-framework", "firebase-admin", "google-cloud-firestore", "pydantic"} <= names
    assert all("==" in p for p in pins)
    assert any(p.startswith("openai[realtime]==") for p in pins)  # websockets, for the sideband


def test_long_pubsub_runs_set_their_subscription_and_publishers_may_publish() -> None:
    scripts = [c[2] for c in commands(load(), "my-project", Path("build/functions")) if c[:2] == ["bash", "-c"]]

    tap = next(s for s in scripts if "functions describe realtime-tap" in s)
    assert "--ack-deadline=600" in tap and "--min-retry-delay=1s" in tap and "--max-retry-delay=10s" in tap
    assert any("topics add-iam-policy-binding realtime-taps" in s and "roles/pubsub.publisher" in s
               for s in scripts)


def test_the_upload_folder_imports_the_bundled_library(tmp_path: Path) -> None:
    folder = build(tmp_path / "functions")

    out = subprocess.run(
        [sys.executable, "-c", "import main, simplytalk, entrypoints; print(simplytalk.__file__)"],
        cwd=folder, capture_output=True, text=True, check=True)

    assert out.stdout.strip().startswith(str(folder))
    assert (folder / "requirements.txt").read_text().strip()
