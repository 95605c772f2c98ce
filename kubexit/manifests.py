"""Kubernetes objects as --inject, --check and the webhook read them: JSON documents, the
pod template inside each workload, and the one line that bad input gets (exit 2)."""

import json

# Where each workload keeps the pod it runs; a Pod is its own template.
TEMPLATE_PATHS = {
    "Pod": (),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
}
JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
YAML_HINT = ("; for YAML, convert first: kubectl create --dry-run=client -o json -f FILE "
             "| kubexit ...")


class ManifestError(Exception):
    """Bad input: one line naming what and where; nothing is written."""


def read_source(path):
    """The text of FILE, or of stdin for None or '-'."""
    import sys

    if path in (None, "-"):
        return "<stdin>", sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as file:
            return path, file.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError("%s: cannot read it: %s" % (path, getattr(err, "strerror", None)
                                                        or err)) from None


def parse_documents(source, text):
    """Every JSON value in `text` (one, or several one after another), each an object."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            break
        try:
            document, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            looks_yaml = text.lstrip().startswith(("apiVersion:", "kind:", "---", "#"))
            raise ManifestError("%s: not JSON (%s at line %d column %d)%s" % (
                source, err.msg.lower(), err.lineno, err.colno,
                YAML_HINT if looks_yaml else "")) from None
        if not isinstance(document, dict):
            raise ManifestError("%s: document %d is a JSON %s, not a Kubernetes object" % (
                source, len(documents) + 1, JSON_TYPES.get(type(document), "value")))
        documents.append(document)
    if not documents:
        raise ManifestError("%s: holds no JSON object" % source)
    return documents


def label(obj):
    """Kind/name, as kubectl names an object."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    return "%s/%s" % (obj.get("kind") or "(no kind)", name)


def pod_templates(obj, where):
    """(label, template) for every pod template in `obj`, a List's items included; the
    template is the dict holding `metadata` and `spec`, changed in place by --inject."""
    kind = obj.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")
                          and isinstance(obj.get("items"), list)):
        items = obj.get("items")
        if not isinstance(items, list):
            raise ManifestError("%s: %s has no items array" % (where, label(obj)))
        for number, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise ManifestError("%s: item %d of the List is not an object" % (where, number))
            yield from pod_templates(item, where)
        return
    path = TEMPLATE_PATHS.get(kind)
    if path is None:
        return
    template = obj
    for key in path:
        template = template.get(key) if isinstance(template, dict) else None
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list):
        raise ManifestError("%s: %s has no pod template with containers at %s" % (
            where, label(obj), ".".join(path + ("spec", "containers"))))
    for container in spec["containers"] + (spec.get("initContainers") or []):
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            raise ManifestError("%s: %s has a container without a name" % (where, label(obj)))
    metadata = template.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ManifestError("%s: %s: its pod template's metadata is not an object"
                            % (where, label(obj)))
    yield label(obj), template


def annotations(template):
    return (template.get("metadata") or {}).get("annotations") or {}


def env_values(container):
    """name -> literal value; a variable set by valueFrom, or with $(VAR) in it, maps to
    None: it is set, but only the kubelet knows to what."""
    values = {}
    for item in container.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        value = item.get("value")
        if "valueFrom" in item or (isinstance(value, str) and "$(" in value):
            values[item["name"]] = None
        else:
            values[item["name"]] = "" if value is None else str(value)
    return values


KUBEXIT_FILES = ("kubexit", "kubexit.pyz")
NOT_SUPERVISING = ("--inject", "--check", "--webhook", "--inspect", "--help", "-h",
                   "--version", "-V")


def runs_kubexit(container):
    """Whether the command starts kubexit as a supervisor: ours (as a pyz, or by python),
    or the Go one; `kubexit --webhook` and the other modes supervise nothing."""
    words = [str(word) for word in (container.get("command") or [])]
    if not words:
        return False
    words += [str(word) for word in container.get("args") or []]
    index = 0
    if words[0].rsplit("/", 1)[-1].startswith("python"):
        index = next((i for i, word in enumerate(words) if i and not word.startswith("-")),
                     len(words))
    if index == len(words) or words[index].rsplit("/", 1)[-1] not in KUBEXIT_FILES:
        return False
    return words[index + 1:index + 2] == [] or words[index + 1] not in NOT_SUPERVISING


def write_documents(documents, stream):
    for document in documents:
        stream.write(json.dumps(document, indent=2) + "\n")
