"""Locate ``infra/`` and fetch the local stack's jars from Maven Central (once, then cached).

The jars are never committed: Maven downloads them into ``~/.m2`` and copies them under the stack
home (``.headwater/jars`` by default). A second fetch with a warm ``~/.m2`` takes seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from headwater.errors import StackError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
INFRA_DIR_ENV = "HEADWATER_INFRA_DIR"
STACK_HOME_ENV = "HEADWATER_STACK_HOME"


def infra_dir() -> Path:
    """The ``infra/`` folder of the source checkout (or ``$HEADWATER_INFRA_DIR``).

    Raises:
        StackError: no infra folder is found (the stack commands need a source checkout).
    """
    explicit = os.environ.get(INFRA_DIR_ENV)
    candidate = Path(explicit) if explicit else Path(__file__).resolve().parents[3] / "infra"
    if not (candidate / "pom.xml").is_file():
        raise StackError(
            "no-infra",
            f"{candidate}/pom.xml not found; the local stack needs a headwater source checkout "
            f"(or set {INFRA_DIR_ENV})",
        )
    return candidate


def default_home() -> Path:
    """Where the stack keeps jars, data, logs and its state file (``$HEADWATER_STACK_HOME``)."""
    explicit = os.environ.get(STACK_HOME_ENV)
    return Path(explicit) if explicit else infra_dir().parent / ".headwater"


def require_tool(name: str, cause: str, hint: str) -> str:
    """Path of an executable on PATH, or a StackError naming what is missing."""
    found = shutil.which(name)
    if not found:
        raise StackError(cause, f"`{name}` is not on PATH; {hint}")
    return found


def read_properties(path: Path) -> dict[str, str]:
    """A minimal Java .properties reader (key=value lines, # comments)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class StackJars:
    """Where the fetched runtimes live."""

    kafka_classpath: str
    kafka_version: str
    registry_jar: Path
    registry_version: str


def fetch_jars(home: Path, log_path: Path) -> StackJars:
    """Make sure Kafka's runtime closure and the registry archive are under ``home/jars``.

    Raises:
        StackError: ``no-maven``/``no-java`` when a tool is missing, ``fetch-failed`` when Maven
            fails (its output is in ``log_path``).
    """
    infra = infra_dir()
    pom = read_properties_from_pom(infra / "pom.xml")
    registry = read_properties(infra / "registry.properties")
    kafka_dir = home / "jars" / f"kafka-{pom['kafka.version']}"
    registry_dir = home / "jars" / f"registry-{registry['version']}"
    runner = registry_dir / registry["runnerJar"]
    log_path.parent.mkdir(parents=True, exist_ok=True)

    if not (kafka_dir / ".complete").exists():
        _maven(
            infra,
            [
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={kafka_dir.resolve()}",
            ],
            log_path,
        )
        (kafka_dir / ".complete").touch()

    if not runner.exists():
        download = home / "jars" / "downloads"
        artifact = ":".join(
            registry[k] for k in ("groupId", "artifactId", "version", "type", "classifier")
        )
        _maven(
            infra,
            [
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={download.resolve()}",
            ],
            log_path,
        )
        archive = next(download.glob(f"{registry['artifactId']}-{registry['version']}*"))
        staging = registry_dir.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        staging.rename(registry_dir)
        archive.unlink()

    return StackJars(
        kafka_classpath=str(kafka_dir.resolve() / "*"),
        kafka_version=pom["kafka.version"],
        registry_jar=runner.resolve(),
        registry_version=registry["version"],
    )


def read_properties_from_pom(pom: Path) -> dict[str, str]:
    """The ``<properties>`` of infra/pom.xml (the pinned versions)."""
    import xml.etree.ElementTree as ET

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(pom).getroot().find("m:properties", ns)
    if props is None:
        raise StackError("fetch-failed", f"{pom} has no <properties>")
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in props}


def _maven(infra: Path, goals: list[str], log_path: Path) -> None:
    require_tool("java", "no-java", "install Java 17+ (e.g. apt-get install openjdk-17-jre)")
    mvn = require_tool("mvn", "no-maven", "install Apache Maven 3.8+ (e.g. apt-get install maven)")
    with log_path.open("ab") as log:
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(infra / "pom.xml"), *goals],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            "fetch-failed", f"Maven exited {result.returncode} fetching {goals[0]}", str(log_path)
        )
