"""`make deploy`: assemble the upload folder and print (DEPLOY=1: run) the deploy commands.

Cloud Functions uploads one folder, so `build/functions` gets functions/
(main.py and its entry points), the shared library (shared/simplytalk) and a
requirements.txt pinned to the versions tested here. Everything else comes
from deploy.toml.

    make deploy                              # print the commands for PROJECT (default: a placeholder)
    DEPLOY=1 PROJECT=my-project make deploy  # run them
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from devtools.manifest import ROOT, Function, Manifest, load

PLACEHOLDER_PROJECT = "YOUR-PROJECT-ID"


def runtime_requirements() -> list[str]:
    """pyproject's runtime dependencies, pinned to the installed (tested) versions."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = []
    for dep in deps:
        req = Requirement(dep)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""  # openai[realtime]: the sideband
        pinned.append(f"{req.name}{extras}=={metadata.version(req.name)}")
    return sorted(pinned)


def build(target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "functions", target, ignore=ignore)
    shutil.copytree(ROOT / "shared" / "simplytalk", target / "simplytalk", ignore=ignore)
    (target / "requirements.txt").write_text("\n".join(runtime_requirements()) + "\n")
    return target


def _function_command(m: Manifest, fn: Function, project: str, source: Path) -> list[str]:
    env = {"SIMPLYTALK_PROJECT": project, **m.env, **fn.env}
    cmd = [
        "gcloud", "functions", "deploy", fn.name, "--gen2", f"--project={project}",
        f"--region={m.region}", f"--runtime={m.runtime}", f"--source={source}",
        f"--entry-point={fn.entry_point}", f"--memory={fn.memory}", f"--timeout={fn.timeout}",
        "--set-env-vars=" + ",".join(f"{k}={v}" for k, v in sorted(env.items())),
    ]
    if fn.max_instances:
        cmd.append(f"--max-instances={fn.max_instances}")
    if fn.cpu:
        cmd.append(f"--cpu={fn.cpu}")
    if fn.concurrency:
        cmd.append(f"--concurrency={fn.concurrency}")
    if fn.secrets:
        cmd.append("--set-secrets=" + ",".join(f"{k}={v}" for k, v in sorted(fn.secrets.items())))
    if fn.trigger == "http":
        # Public URL; every user endpoint verifies the Firebase ID token itself.
        cmd += ["--trigger-http", "--allow-unauthenticated"]
    elif fn.trigger == "firestore":
        cmd += [
            f"--trigger-event-filters=type={fn.event_type}",
            "--trigger-event-filters=database=(default)",
            f"--trigger-event-filters-path-pattern=document={fn.document}",
            f"--trigger-location={m.firestore_location}",
        ]
    elif fn.trigger == "pubsub":
        cmd.append(f"--trigger-topic={fn.topic}")
    if fn.trigger != "http":
        cmd.append("--retry" if fn.retry else "--no-retry")
    return cmd


def _subscription_commands(m: Manifest, fn: Function, project: str) -> list[list[str]]:
    """Eventarc makes a Pub/Sub function's push subscription with its own ack deadline and retry
    backoff; a function whose runs are long (realtime-tap) sets its own on that subscription."""
    if fn.trigger != "pubsub" or not (fn.ack_deadline or fn.retry_backoff):
        return []
    where = f"--project={project} --location={m.region}"
    subscription = (f"$(gcloud eventarc triggers describe \"$(gcloud functions describe {fn.name} --gen2 "
                    f"--region={m.region} --project={project} --format='value(eventTrigger.trigger)')\" {where} "
                    "--format='value(transport.pubsub.subscription)')")
    options = [f"--ack-deadline={fn.ack_deadline}"] if fn.ack_deadline else []
    if fn.retry_backoff:
        options += [f"--min-retry-delay={fn.retry_backoff[0]}", f"--max-retry-delay={fn.retry_backoff[1]}"]
    return [["bash", "-c", f"gcloud pubsub subscriptions update \"{subscription}\" --project={project} "
             + " ".join(options)]]


def commands(m: Manifest, project: str, source: Path) -> list[list[str]]:
    cmds: list[list[str]] = []
    for fn in m.by_trigger("pubsub"):
        cmds.append(["gcloud", "pubsub", "topics", "create", str(fn.topic), f"--project={project}"])
    cmds += [_function_command(m, fn, project, source) for fn in m.functions]
    cmds += [cmd for fn in m.functions for cmd in _subscription_commands(m, fn, project)]
    for topic in sorted({t for fn in m.functions for t in fn.publishes}):
        # functions run as the default compute service account; publishing needs the publisher role
        cmds.append(["bash", "-c", (
            f"gcloud pubsub topics add-iam-policy-binding {topic} --project={project} "
            f"--member=serviceAccount:$(gcloud projects describe {project} --format='value(projectNumber)')"
            "-compute@developer.gserviceaccount.com --role=roles/pubsub.publisher")])
    for fn in m.functions:
        if fn.schedule:
            cmds.append([
                "gcloud", "scheduler", "jobs", "create", "pubsub", fn.name, f"--project={project}",
                f"--location={m.region}", f"--schedule={fn.schedule}", "--time-zone=UTC",
                f"--topic={fn.topic}", "--message-body={}",
            ])
    cmds.append(["node_modules/.bin/firebase", "deploy", "--only",
                 "firestore:rules,firestore:indexes", "--project", project, "--non-interactive"])
    return cmds


def main() -> int:
    manifest = load()
    project = os.environ.get("PROJECT", PLACEHOLDER_PROJECT)
    run = os.environ.get("DEPLOY") == "1"
    if run and (project == PLACEHOLDER_PROJECT or project.startswith("demo-")):
        print("DEPLOY=1 needs PROJECT=<a real project id>", file=sys.stderr)
        return 2
    source = build(ROOT / manifest.source)
    print(f"# assembled {source.relative_to(ROOT)} (functions/ + shared/simplytalk + requirements.txt)")
    for cmd in commands(manifest, project, source.relative_to(ROOT)):
        print(shlex.join(cmd))
        if run:
            subprocess.run(cmd, cwd=ROOT, check=True)
    if not run:
        print("# printed only; DEPLOY=1 PROJECT=<id> make deploy runs them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
