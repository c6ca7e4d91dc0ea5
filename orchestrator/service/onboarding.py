"""The first hour against a real Alma, up to a configuration file: the regional gateways, the checks of what
``hwf init`` is told, which of the institution's manual jobs plays which role (``hwf init`` looks them up by
name, ``hwf jobs`` lists them), and the ``hwf.toml`` that ``hwf init`` writes: ``config.example.toml`` (shipped
inside the package, the one source of every key and its comment) with this institution's values filled in.

Only read-only Alma calls are made here (``GET /conf/jobs``), on a client the caller builds and closes.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.alma.client import AlmaClient
from orchestrator.alma.types import JobInfo
from orchestrator.config import STEP_JOB_KEYS, Config, parse_config
from orchestrator.errors import BadInputError, ConfigError

REGIONS: dict[str, str] = {
    **{r: f"https://api-{r}.hosted.exlibrisgroup.com" for r in ("na", "eu", "ap", "aps", "ca")},
    "cn": "https://api-cn.hosted.exlibrisgroup.com.cn",
}
DEFAULT_REGION = "na"
DEFAULT_KEY_ENV = "HWF_ALMA_API_KEY"

# Job names are institution-defined; these are the ones the first institution's Alma (Grinnell's) showed.
COPY_JOB_NAMES = ("copy dcterms to dc:identifier", "copy dcterm to dc:identifier", "copy dcterm to dcidentifier")
MIGRATION_NAME_PART = "handle migration"
INTEGRATION_CATEGORY = "HANDLE_INTEGRATION"
INTEGRATION_NAME = "handle integration"
ROLE_OPTIONS = {
    "copy_identifiers": "--copy-job",
    "handle_migration": "--migration-job",
    "handle_integration": "--integration-job",
}
ROLE_TITLES = {
    "copy_identifiers": '"Copy dcterms to dc:identifier"',
    "handle_migration": 'the "… Handle Migration" job',
    "handle_integration": "the Handle integration profile's job",
}

# Placeholders `hwf init` writes when it cannot know a value; the file still loads, `hwf ping` flags them.
PLACEHOLDER_JOB_ID = "M0"
PLACEHOLDER_INSTITUTION = "YOUR_INST"
PLACEHOLDER_PREFIX = "0"
PLACEHOLDER_PRIMO_DOMAIN = "your-institution.primo.exlibrisgroup.com"
PLACEHOLDER_VIEW = "YOUR_VIEW"

# The example's first line ("Copy to hwf.toml ...") gives way to these in the file `hwf init` writes.
EXAMPLE_FILE = "config.example.toml"
INIT_HEADER = (
    "# hwf configuration, written by `hwf init`. Every key is here with its default; edit freely.\n"
    "# Lines marked TODO still hold placeholders: fill them in, then run `hwf ping`.\n"
)

_INSTITUTION = re.compile(r"^[A-Za-z0-9_]+$")
_JOB_ID = re.compile(r"^[MSO]\d+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFIX = re.compile(r"^[0-9][0-9.]*$")
_TOML_TABLE = re.compile(r"^\[([A-Za-z0-9_.]+)\]\s*$")
_TOML_KEY = re.compile(r"^([A-Za-z0-9_]+)\s*=")


# ---------------------------------------------------------------------------------------------
# Validation of what `hwf init` is told


def region_base_url(region: str) -> str:
    """The API gateway of an Alma region. :raises BadInputError: not one of na, eu, ap, aps, ca, cn."""
    value = region.strip().lower()
    if value not in REGIONS:
        raise BadInputError(f"unknown region {region.strip()!r}: one of {', '.join(REGIONS)}")
    return REGIONS[value]


def check_institution(code: str) -> str:
    """An Alma institution code (letters, digits, underscores). :raises BadInputError:"""
    value = code.strip()
    if not _INSTITUTION.match(value):
        raise BadInputError(
            f"{code!r} is not an Alma institution code: letters, digits and underscores only, "
            "no spaces (like 01GCL_INST)"
        )
    return value


def check_job_id(value: str, option: str) -> str:
    """A job id as Alma writes it (M, S or O and digits). :raises BadInputError: naming the option."""
    job_id = value.strip()
    if not _JOB_ID.match(job_id):
        raise BadInputError(f"{option} {value!r} is not an Alma job id (like M4406520730000561; see `hwf jobs`)")
    return job_id


def _check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise BadInputError(f"--key-env {name!r} is not an environment variable name")
    return name


def _check_prefix(value: str) -> str:
    prefix = value.strip()
    if not _PREFIX.match(prefix):
        raise BadInputError(f"--prefix {prefix!r} is not a handle prefix (digits, like 11084)")
    return prefix


def _check_text(value: str, option: str) -> str:
    value = value.strip()
    if not value or any(c in value for c in '"\\\n\r\t '):
        raise BadInputError(f"{option} {value!r} must be one word without quotes or backslashes")
    return value


# ---------------------------------------------------------------------------------------------
# Jobs: which of the institution's manual jobs play which role


def roles_of(job: JobInfo) -> tuple[str, ...]:
    """The workflow roles a job's name or category suggests (usually none, sometimes one)."""
    name = " ".join(job.name.split()).casefold()
    roles = []
    if name in COPY_JOB_NAMES:
        roles.append("copy_identifiers")
    if MIGRATION_NAME_PART in name:
        roles.append("handle_migration")
    if (job.category or "").upper() == INTEGRATION_CATEGORY or name == INTEGRATION_NAME:
        roles.append("handle_integration")
    return tuple(roles)


@dataclass(frozen=True)
class JobDiscovery:
    """Every manual job of the institution and, per role, the jobs that could play it."""

    jobs: tuple[JobInfo, ...]
    candidates: dict[str, tuple[JobInfo, ...]]

    def by_id(self, job_id: str) -> JobInfo | None:
        return next((j for j in self.jobs if j.id == job_id), None)


def discover_jobs(alma: AlmaClient) -> JobDiscovery:
    """Page through ``GET /conf/jobs?type=MANUAL`` (100 a page) and match the three roles by name.

    :raises AlmaError: Alma refused or could not be reached.
    """
    jobs = tuple(alma.list_jobs("MANUAL"))
    candidates = {role: tuple(j for j in jobs if role in roles_of(j)) for role in STEP_JOB_KEYS}
    return JobDiscovery(jobs=jobs, candidates=candidates)


@dataclass(frozen=True)
class JobListing:
    """One manual job for ``hwf jobs``: what it looks like to hwf and what the config uses it for."""

    job: JobInfo
    looks_like: tuple[str, ...]
    configured_as: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "name": self.job.name,
            "category": self.job.category,
            "type": self.job.type,
            "description": self.job.description,
            "looks_like": list(self.looks_like),
            "configured_as": list(self.configured_as),
        }


def list_jobs(config: Config, alma: AlmaClient, search: str | None = None) -> list[JobListing]:
    """The institution's manual jobs (``GET /conf/jobs?type=MANUAL``), optionally only those whose id,
    name or category contains ``search`` (any case). :raises AlmaError:"""
    configured: dict[str, list[str]] = {}
    for role, spec in config.alma.jobs.items():
        configured.setdefault(spec.id, []).append(role)
    needle = (search or "").strip().casefold()
    listings = []
    for job in list(alma.list_jobs("MANUAL")):
        text = " ".join(p for p in (job.id, job.name, job.category) if p).casefold()
        if needle and needle not in text:
            continue
        listings.append(JobListing(job, roles_of(job), tuple(configured.get(job.id, ()))))
    return listings


# ---------------------------------------------------------------------------------------------
# hwf init: the configuration file


@dataclass(frozen=True)
class InitSettings:
    """What ``hwf init`` knows; ``None`` is written as a placeholder that still loads."""

    region: str = DEFAULT_REGION
    institution: str | None = None
    jobs: Mapping[str, str | None] = field(default_factory=dict)
    job_names: Mapping[str, str] = field(default_factory=dict)
    key_env: str = DEFAULT_KEY_ENV
    prefix: str | None = None
    primo_domain: str | None = None
    primo_view: str | None = None


@dataclass(frozen=True)
class InitResult:
    path: Path
    base_url: str
    jobs: dict[str, str]
    placeholders: tuple[str, ...]  # dotted keys still to fill in


@dataclass
class _Values:
    """The value lines ``hwf init`` writes, by dotted key (the TOML after ``key = ``), and the keys it
    could only fill with a placeholder."""

    lines: dict[str, str] = field(default_factory=dict)
    placeholders: list[str] = field(default_factory=list)

    def set(self, key: str, value: str, note: str = "") -> None:
        """``value`` is checked to need no escaping (no quotes, backslashes or line breaks)."""
        self.lines[key] = f'"{value}"' + (f"  # {note}" if note else "")

    def known_or_todo(self, key: str, value: str | None, placeholder: str, hint: str) -> None:
        if value:
            self.set(key, value)
        else:
            self.placeholders.append(key)
            self.set(key, placeholder, f"TODO: {hint}")


def refuse_overwrite(path: Path, force: bool) -> None:
    """:raises BadInputError: ``path`` exists and ``force`` is off (nothing is written)."""
    if path.exists() and not force:
        raise BadInputError(f"{path} already exists; hwf init will not overwrite it (pass --force to replace it)")


def example_config() -> str:
    """``config.example.toml`` as shipped inside the package: every key with its default and its comment."""
    return resources.files("orchestrator").joinpath(EXAMPLE_FILE).read_text(encoding="utf-8")


def fill_example(example: str, lines: Mapping[str, str]) -> str:
    """``example`` with the value of each dotted key in ``lines`` replaced by the TOML given there (a trailing
    comment included); every other line, comments first, as it is. :raises ValueError: a key is not there."""
    table, left, out = "", dict(lines), []
    for line in example.splitlines(keepends=True):
        if heading := _TOML_TABLE.match(line):
            table = heading.group(1)
        elif (key := _TOML_KEY.match(line)) and (dotted := f"{table}.{key.group(1)}".lstrip(".")) in left:
            line = f"{key.group(1)} = {left.pop(dotted)}\n"
        out.append(line)
    if left:
        raise ValueError(f"{EXAMPLE_FILE} has no line for {', '.join(left)}")
    return "".join(out)


def render_config(settings: InitSettings) -> tuple[str, tuple[str, ...]]:
    """The commented ``hwf.toml`` text for ``settings`` and the dotted keys left as placeholders: the example
    configuration with a header of its own and the values ``settings`` gives (a placeholder marked TODO
    for each it does not)."""
    base_url = region_base_url(settings.region)
    institution = check_institution(settings.institution) if settings.institution else None
    values = _Values()
    values.set("alma.base_url", base_url)
    values.set("alma.api_key_env", _check_env_name(settings.key_env))
    institution_hint = "your Alma institution code, like 01GCL_INST"
    values.known_or_todo("alma.institution_code", institution, PLACEHOLDER_INSTITUTION, institution_hint)
    for role in STEP_JOB_KEYS:
        _fill_job(values, settings, role)
    prefix = _check_prefix(settings.prefix) if settings.prefix else None
    values.known_or_todo("handles.prefix", prefix, PLACEHOLDER_PREFIX, "your handle prefix, like 11084")
    domain = _check_text(settings.primo_domain, "--primo-domain") if settings.primo_domain else None
    values.known_or_todo("primo.domain", domain, PLACEHOLDER_PRIMO_DOMAIN, "your Primo VE host")
    view = _check_text(settings.primo_view, "--primo-view") if settings.primo_view else None
    placeholder_view = f"{institution or PLACEHOLDER_INSTITUTION}:{PLACEHOLDER_VIEW}"
    values.known_or_todo("primo.view", view, placeholder_view, "your Primo view, like 01GCL_INST:GCL")
    example = example_config()
    if example.startswith("# hwf configuration"):
        example = example.split("\n", 1)[1]
    return INIT_HEADER + fill_example(example, values.lines), tuple(values.placeholders)


def _fill_job(values: _Values, settings: InitSettings, role: str) -> None:
    """A job id, with the job's name as a comment when Alma told it."""
    job_id = settings.jobs.get(role)
    if not job_id:
        values.known_or_todo(
            f"alma.jobs.{role}", None, PLACEHOLDER_JOB_ID, f"the id of {ROLE_TITLES[role]}; see `hwf jobs`"
        )
        return
    name = settings.job_names.get(role)
    note = json.dumps(name, ensure_ascii=False) if name else ""
    values.set(f"alma.jobs.{role}", check_job_id(job_id, ROLE_OPTIONS[role]), note)


def write_init_config(path: Path, settings: InitSettings, *, force: bool = False) -> InitResult:
    """Write a commented ``hwf.toml`` (atomically); the file is validated with the real loader first.

    :raises BadInputError: the file exists and ``force`` is off, or a setting is invalid.
    """
    refuse_overwrite(path, force)
    text, placeholders = render_config(settings)
    try:
        parse_config(tomllib.loads(text), path, environ={})
    except (ConfigError, tomllib.TOMLDecodeError) as exc:  # pragma: no cover - a template bug
        raise BadInputError(f"hwf init would write an invalid configuration: {exc}") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInputError(f"cannot write {path}: {exc.strerror}") from None
    jobs = {role: job_id for role in STEP_JOB_KEYS if (job_id := settings.jobs.get(role))}
    return InitResult(path, region_base_url(settings.region), jobs, placeholders)


def placeholders_in(config: Config) -> list[str]:
    """Dotted keys of a loaded configuration that still hold ``hwf init``'s placeholders."""
    found = []
    if config.alma.institution_code == PLACEHOLDER_INSTITUTION:
        found.append("alma.institution_code")
    found += [f"alma.jobs.{role}" for role, spec in config.alma.jobs.items() if spec.id == PLACEHOLDER_JOB_ID]
    if config.handles.prefix == PLACEHOLDER_PREFIX:
        found.append("handles.prefix")
    if config.primo.domain == PLACEHOLDER_PRIMO_DOMAIN:
        found.append("primo.domain")
    if config.primo.view.endswith(":" + PLACEHOLDER_VIEW):
        found.append("primo.view")
    return found
