"""--inject: wire kubexit into a pod template, driven by its annotations.

The sidecar model is native sidecars': a sidecar ends when every other regular container
has ended, and the others start once the sidecars are ready. Everything comes from what
the manifest already says (the sidecars' readinessProbes, the pod's restartPolicy); a
KUBEXIT_* variable the manifest sets is never overwritten, and a template that is already
wired is left as it is, so injecting twice changes nothing.
"""

import shlex

from kubexit import manifests
from kubexit.config import ConfigError, parse_http_url
from kubexit.manifests import ManifestError

PREFIX = "kubexit/"
INJECT = PREFIX + "inject"
SIDECARS = PREFIX + "sidecars"
SKIP = PREFIX + "skip"
IMAGE = PREFIX + "image"
QUIT_URL = PREFIX + "quit-url."
DEFAULT_IMAGE = "kubexit:latest"
DEFAULT_PYTHON = "python3"
# -I: the app's PYTHONPATH cannot shadow the standard library for kubexit; -S: no site.
PYTHON_FLAGS = ("-I", "-S")
IMAGE_PATH = "/usr/local/bin/kubexit"      # where the Dockerfile puts it
BIN_VOLUME = "kubexit"
BIN_DIR = "/kubexit"
PYZ = BIN_DIR + "/kubexit.pyz"
GRAVEYARD_VOLUME = "kubexit-graveyard"
GRAVEYARD = "/graveyard"
PROBE_HOST = "127.0.0.1"   # the kubelet probes the pod's IP; kubexit probes from inside it


class Options:
    """--image and --python as given (None: the annotation, then the default)."""

    __slots__ = ("image", "python")

    def __init__(self, image=None, python=None):
        self.image = image
        self.python = python or DEFAULT_PYTHON


def names_annotation(annotations, key, containers, where):
    """A comma list of container names, each a regular container of this pod."""
    value = annotations.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        raise ManifestError("%s: annotation %s must be a string of container names" % (where, key))
    names = []
    for name in value.split(","):
        name = name.strip()
        if name and name not in names:
            names.append(name)
    unknown = [name for name in names if name not in containers]
    if unknown:
        raise ManifestError("%s: annotation %s names %s, which is no container of this pod "
                            "(containers: %s)" % (where, key, ", ".join(unknown),
                                                  ", ".join(containers)))
    return names


def check_annotations(annotations, where):
    """Unknown kubexit/ annotations are typos that would be ignored silently: refuse them."""
    import difflib

    known = (INJECT, SIDECARS, SKIP, IMAGE)
    for key in annotations:
        if not key.startswith(PREFIX) or key in known or key.startswith(QUIT_URL):
            continue
        guess = difflib.get_close_matches(key, known + (QUIT_URL + "NAME",), n=1)
        raise ManifestError("%s: unknown annotation %s%s" % (
            where, key, "; did you mean %s?" % guess[0] if guess else ""))


def wants_injection(annotations, where, default):
    value = annotations.get(INJECT)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise ManifestError('%s: annotation %s is %r; write "true" or "false"'
                            % (where, INJECT, value))
    return value == "true"


def resolve_port(port, container, where):
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return declared.get("containerPort")
    raise ManifestError("%s: container %s: its readinessProbe's port %r is neither a number "
                        "nor the name of one of its ports" % (where, container["name"], port))


def host_for_url(host):
    return "[%s]" % host if ":" in host else host


def readiness_probe(container, where, warn):
    """The container's readinessProbe as a KUBEXIT_READINESS_PROBE, or None."""
    probe = container.get("readinessProbe") or {}
    name = container["name"]
    if "httpGet" in probe:
        get = probe["httpGet"]
        if get.get("httpHeaders"):
            warn("%s: container %s: its readinessProbe's httpHeaders are not sent by kubexit's "
                 "probe" % (where, name))
        path = get.get("path") or "/"
        return "%s://%s:%d%s" % ((get.get("scheme") or "HTTP").lower(),
                                 host_for_url(get.get("host") or PROBE_HOST),
                                 resolve_port(get.get("port"), container, where),
                                 path if path.startswith("/") else "/" + path)
    if "tcpSocket" in probe:
        socket = probe["tcpSocket"]
        return "tcp://%s:%d" % (host_for_url(socket.get("host") or PROBE_HOST),
                                resolve_port(socket.get("port"), container, where))
    if "exec" in probe:
        command = (probe["exec"] or {}).get("command") or []
        return "exec:" + " ".join(shlex.quote(str(word)) for word in command) if command \
            else None
    if "grpc" in probe:
        warn("%s: container %s: kubexit cannot speak gRPC health checks; its readiness is "
             "probed as a TCP connect to the gRPC port" % (where, name))
        return "tcp://%s:%d" % (PROBE_HOST, resolve_port(probe["grpc"].get("port"), container,
                                                         where))
    return None


def set_env(container, variables):
    """Append the variables the container does not set already, in order."""
    env = container.setdefault("env", [])
    present = {item.get("name") for item in env if isinstance(item, dict)}
    for name, value in variables:
        if name not in present and value is not None:
            item = {"name": name, "value": value} if isinstance(value, str) else \
                {"name": name, "valueFrom": value}
            env.append(item)


def mount(container, volume, path, where, read_only=False):
    """Mount `volume` at `path` unless it is mounted already; its mount path either way."""
    mounts = container.setdefault("volumeMounts", [])
    for existing in mounts:
        if existing.get("name") == volume and not existing.get("subPath"):
            return existing.get("mountPath")
    for existing in mounts:
        if existing.get("mountPath", "").rstrip("/") == path:
            raise ManifestError("%s: container %s already mounts %s at %s, where kubexit "
                                "needs its volume %s" % (where, container["name"],
                                                         existing.get("name"), path, volume))
    entry = {"name": volume, "mountPath": path}
    if read_only:
        entry["readOnly"] = True
    mounts.append(entry)
    return path


def add_volume(spec, name, empty_dir, where):
    volumes = spec.setdefault("volumes", [])
    for volume in volumes:
        if volume.get("name") == name:
            if "emptyDir" not in volume:
                raise ManifestError("%s: volume %s exists and is not an emptyDir; kubexit "
                                    "needs that name for its own emptyDir" % (where, name))
            return
    volumes.append({"name": name, "emptyDir": empty_dir})


def add_side_load(spec, image):
    """The init container that copies kubexit into the shared emptyDir, first of all."""
    inits = spec.setdefault("initContainers", [])
    if any(c.get("name") == BIN_VOLUME for c in inits):
        return
    inits.insert(0, {
        "name": BIN_VOLUME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", IMAGE_PATH, PYZ],
        "volumeMounts": [{"name": BIN_VOLUME, "mountPath": BIN_DIR}],
    })


def shutdown_timeout(spec):
    """A held SIGTERM must reach a sidecar well before the kubelet's SIGKILL."""
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 30:
        return "%ds" % (grace * 2 // 3)
    return None


def inject_template(template, where, options, warn, default=True):
    """Wire kubexit into one pod template in place; False when it was left alone."""
    notes = manifests.annotations(template)
    if not isinstance(notes, dict):
        raise ManifestError("%s: its pod template's annotations are not an object" % where)
    check_annotations(notes, where)
    if not wants_injection(notes, where, default):
        return False
    spec = template["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    sidecars = names_annotation(notes, SIDECARS, list(containers), where)
    skip = names_annotation(notes, SKIP, list(containers), where)
    quit_urls = {}
    for key, url in notes.items():
        if not key.startswith(QUIT_URL):
            continue
        target = key[len(QUIT_URL):]
        if target not in skip or target not in sidecars:
            raise ManifestError("%s: annotation %s: %s is not a sidecar in %s; kubexit stops a "
                                "wrapped sidecar itself, and a quit URL tells a skipped one to "
                                "quit" % (where, key, target or "(no name)", SKIP))
        try:
            quit_urls[target] = parse_http_url(key, str(url)).text
        except ConfigError as err:
            raise ManifestError("%s: annotation %s" % (where, err)) from None
    image = notes.get(IMAGE) or options.image or DEFAULT_IMAGE
    if not isinstance(image, str):
        raise ManifestError("%s: annotation %s must be a string" % (where, IMAGE))
    wrapped = [c for c in spec["containers"] if c["name"] not in skip]
    if not wrapped:
        warn("%s: every container is in %s: nothing to wrap" % (where, SKIP))
        return False
    fresh = [c for c in wrapped if not manifests.runs_kubexit(c)]
    if not fresh:
        return False   # wired already, by an earlier --inject or by hand
    for container in fresh:
        if not container.get("command"):
            raise ManifestError(
                "%s: container %s has no command, so kubexit cannot wrap it (the image's "
                "entrypoint is unknown offline); set its command (the image's ENTRYPOINT "
                "and CMD), or name it in %s" % (where, container["name"], SKIP))

    kubexit_names = {c["name"]: manifests.env_values(c).get("KUBEXIT_NAME") or c["name"]
                     for c in wrapped}
    mains = [name for name in containers if name not in sidecars]
    main_deaths = [kubexit_names.get(name, name) for name in mains]
    watch_pod = any(name in skip for name in mains) and bool(sidecars)
    waited_sidecars = [name for name in sidecars if name not in skip]
    probes = {name: readiness_probe(containers[name], where, warn) for name in sidecars}
    for name in sidecars:
        if name in skip and (probes[name] or "").startswith("exec:"):
            warn("%s: sidecar %s is in %s and its readinessProbe is exec, which runs in its "
                 "own container: the others cannot run it, and do not wait for it; give it an "
                 "httpGet or tcpSocket probe" % (where, name, SKIP))
            probes[name] = None
        elif name in skip and probes[name] is None:
            warn("%s: sidecar %s is in %s and has no readinessProbe: the others do not wait "
                 "for it" % (where, name, SKIP))
    if len(mains) > 1 and quit_urls:
        warn("%s: the first of %s to end POSTs the quit URL of %s" % (
            where, ", ".join(mains), ", ".join(quit_urls)))
    probe_less = [name for name in waited_sidecars if probes[name] is None]
    all_started = bool(probe_less) and len(probe_less) == len(waited_sidecars)

    add_side_load(spec, image)
    add_volume(spec, BIN_VOLUME, {}, where)
    add_volume(spec, GRAVEYARD_VOLUME, {"medium": "Memory"}, where)
    restart_policy = spec.get("restartPolicy") or "Always"
    for container in fresh:
        name = container["name"]
        mount(container, BIN_VOLUME, BIN_DIR, where, read_only=True)
        graveyard = mount(container, GRAVEYARD_VOLUME, GRAVEYARD, where)
        command = list(container["command"])
        container["command"] = [options.python] + list(PYTHON_FLAGS) + [PYZ] + (
            ["--"] if str(command[0]).startswith("-") else []) + command
        variables = [
            ("KUBEXIT_NAME", name),
            ("KUBEXIT_GRAVEYARD", graveyard),
            ("KUBEXIT_RESTART_POLICY", restart_policy),
        ]
        if name in sidecars:
            readiness = probes[name]
            if readiness is None and not all_started and name in probe_less:
                readiness = "file:" + PYZ   # counts once started, beside sidecars with probes
            variables += [
                ("KUBEXIT_DEATH_DEPS", ",".join(main_deaths) or None),
                ("KUBEXIT_DEATH_POLICY", "all" if main_deaths else None),
                ("KUBEXIT_SHUTDOWN_ORDER", "after-death-deps" if main_deaths else None),
                ("KUBEXIT_SHUTDOWN_TIMEOUT", shutdown_timeout(spec) if main_deaths else None),
                ("KUBEXIT_READINESS_PROBE", readiness),
            ]
            if watch_pod:
                variables += [
                    ("KUBEXIT_WATCH_POD", "true"),
                    ("KUBEXIT_POD_NAME", {"fieldRef": {"fieldPath": "metadata.name"}}),
                    ("KUBEXIT_NAMESPACE", {"fieldRef": {"fieldPath": "metadata.namespace"}}),
                ]
        else:
            births = [kubexit_names[s] for s in waited_sidecars]
            variables += [
                ("KUBEXIT_BIRTH_DEPS", ",".join(births) or None),
                ("KUBEXIT_BIRTH_CONDITION", "started" if births and all_started else None),
                ("KUBEXIT_WAIT_FOR", ",".join(probes[s] for s in sidecars
                                              if s in skip and probes[s]) or None),
                ("KUBEXIT_QUIT_URLS", ",".join(quit_urls.values()) or None),
            ]
        if not (name in sidecars and watch_pod):
            variables.append(("KUBEXIT_API", "off"))
        set_env(container, variables)
    if watch_pod:
        warn("%s: %s %s in %s, so the sidecars learn of its end from the pod's status: the "
             "pod's service account needs get, list and watch on pods (examples/rbac.yaml)"
             % (where, ", ".join(n for n in mains if n in skip),
                "is" if sum(n in skip for n in mains) == 1 else "are", SKIP))
    return True


def misplaced_annotations(document, template):
    """kubexit/ annotations on a workload's own metadata, where they do nothing."""
    if template is document:
        return []
    return sorted(k for k in manifests.annotations(document) if k.startswith(PREFIX))


def inject_documents(documents, source, options, warn, default=True):
    """Inject every pod template of every document in place; how many were changed."""
    changed = 0
    for document in documents:
        for name, template in manifests.pod_templates(document, source):
            where = "%s: %s" % (source, name)
            misplaced = misplaced_annotations(document, template)
            if misplaced:
                warn("%s: %s on the %s's own metadata %s ignored; put %s on its pod "
                     "template's metadata" % (where, ", ".join(misplaced), document["kind"],
                                              "is" if len(misplaced) == 1 else "are",
                                              "it" if len(misplaced) == 1 else "them"))
            changed += inject_template(template, where, options, warn, default)
    return changed
