"""Manifests are YAML data files under manifests/<service>/, rendered with parameters.

A string value `${key}` is replaced by the parameter itself (a list, a mapping, a number
or a string; None leaves the field out); `${key}` inside a longer string is substituted as text. Substitution walks
the parsed YAML, never the text, so a value cannot inject structure. The common labels
are set here and nowhere else.

An optional document carries a top-level `x-when: ${key}`: it is rendered only when that
parameter is true, and the key never reaches the API. It still counts among the
service's templates, so `down` (which looks for the kinds of every template) removes it.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml

from playbooks.errors import PlaybookError

PART_OF = "datalab-playbooks"
MANAGED_BY = "datalab-playbooks"
REDACTED = "<redacted>"
_WHOLE = re.compile(r"^\$\{([a-z_][a-z0-9_]*)\}$")
WHEN = "x-when"


def manifests_dir() -> Path:
    """manifests/ in a checkout, playbooks/manifests inside an installed wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "manifests", package.parent / "manifests"):
        if candidate.is_dir():
            return candidate
    raise PlaybookError(f"manifests not found next to {package}: reinstall datalab-playbooks")


def template_folder(name: str) -> Path:
    """manifests/<name>, or the folder a registered service from outside the package names for it."""
    builtin = manifests_dir() / name
    if builtin.is_dir():
        return builtin
    from playbooks.registry import services

    for service in services():
        if name in service.manifests:
            return Path(service.manifests[name])
    return builtin


@cache
def load_templates(service: str) -> tuple[dict, ...]:
    folder = template_folder(service)
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    if not docs:
        raise PlaybookError(f"no manifests for service {service!r} in {folder}")
    return tuple(docs)


def selector_labels(service: str, instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/instance": instance}


def common_labels(service: str, instance: str) -> dict[str, str]:
    return {
        **selector_labels(service, instance),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def managed_selector(service: str | None = None, instance: str | None = None) -> str:
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY}
    if service:
        labels["app.kubernetes.io/name"] = service
    if instance:
        labels["app.kubernetes.io/instance"] = instance
    return label_selector(labels)


def plain(value):
    """Plain dicts and lists from configuration values (invoke wraps them in DataProxy)."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "items")):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _substitute(node, params: dict):
    if isinstance(node, dict):
        out = {key: _substitute(value, params) for key, value in node.items()}
        # A parameter set to None leaves its field out (e.g. no storageClassName).
        return {key: value for key, value in out.items() if value is not None or node[key] is None}
    if isinstance(node, list):
        return [_substitute(item, params) for item in node]
    if isinstance(node, str) and "${" in node:
        whole = _WHOLE.match(node)
        if whole:
            return copy.deepcopy(params[whole.group(1)])
        return string.Template(node).substitute(params)
    return node


def _label(doc: dict, service: str, instance: str) -> None:
    labels = common_labels(service, instance)
    meta = doc.setdefault("metadata", {})
    component = (meta.get("labels") or {}).get("app.kubernetes.io/component")
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    spec = doc.get("spec") or {}
    template = spec.get("template")
    if template is not None:
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
        if component:
            tmeta["labels"]["app.kubernetes.io/component"] = component
    if doc.get("kind") in ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"):
        match = selector_labels(service, instance)
        if component:
            match["app.kubernetes.io/component"] = component
        spec["selector"] = {"matchLabels": match}
    if doc.get("kind") == "Service":
        match = selector_labels(service, instance)
        match.update(spec.get("selector") or {})
        spec["selector"] = match


def render(service: str, instance: str, namespace: str, params: dict) -> list[dict]:
    """Every manifest of a service, with parameters, namespace and common labels set."""
    values = {"name": instance, "namespace": namespace, **plain(params)}
    try:
        docs = [
            _substitute(copy.deepcopy({key: value for key, value in doc.items() if key != WHEN}), values)
            for doc in load_templates(service)
            if WHEN not in doc or _substitute(doc[WHEN], values)
        ]
    except KeyError as missing:
        raise PlaybookError(f"manifests of {service} need parameter {missing}") from None
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        _label(doc, service, instance)
    return docs


def redacted(docs: list[dict]) -> list[dict]:
    """Copies safe to print: every Secret value replaced."""
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        if doc.get("kind") == "Secret":
            for key in ("data", "stringData"):
                if doc.get(key):
                    doc[key] = dict.fromkeys(doc[key], REDACTED)
        out.append(doc)
    return out


# Strings Go's YAML (kubectl, helm) reads as numbers although PyYAML leaves them unquoted,
# e.g. a digest of digits with a leading zero, 0128000437704991.
_NUMBER_LIKE = re.compile(r"^[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^0[xXoObB][0-9a-fA-F_]+$")


class _GoSafeDumper(yaml.SafeDumper):
    """A SafeDumper that quotes every string another YAML parser might take for a number."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "'" if _NUMBER_LIKE.match(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoSafeDumper.add_representer(str, _represent_str)


def dump_yaml(data, stream=None) -> str | None:
    """YAML for kubectl and helm: block style, keys in order, number-like strings quoted."""
    return yaml.dump(data, stream, Dumper=_GoSafeDumper, sort_keys=False, default_flow_style=False)


def to_yaml(docs: list[dict]) -> str:
    return yaml.dump_all(docs, Dumper=_GoSafeDumper, sort_keys=False, default_flow_style=False)


def kinds(docs: list[dict]) -> list[str]:
    """kubectl resource names for the kinds in docs, e.g. deployments.apps, in order."""
    out = []
    for doc in docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        kind = doc["kind"].lower()
        # networkpolicies, ingresses, services
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + ("es" if kind.endswith("s") else "s")
        name = f"{plural}.{group}" if group else plural
        if name not in out:
            out.append(name)
    return out
