"""--check: lint the kubexit wiring of pod templates offline.

Each container's KUBEXIT_* variables go through config.load, the parser kubexit itself
runs at start-up, with the container's filesystem answered from the manifest
(ManifestFiles); the pod-wide rules (dep names, birth-dep cycles, one shared graveyard)
are checked here. A template with kubexit/ annotations is checked as --inject (or the
webhook) would write it.
"""

import copy
import posixpath

from kubexit import config as configuration
from kubexit import manifests
from kubexit.inject import PREFIX, Options, inject_template, misplaced_annotations

# What the kubelet sets in every container; the values only need to be plausible.
KUBELET_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "HOSTNAME": "pod"}
# Stand-ins for variables the kubelet fills from the downward API.
DOWNWARD_STAND_INS = {"KUBEXIT_POD_NAME": "pod", "KUBEXIT_NAMESPACE": "default"}


class ManifestFiles:
    """config.load's questions about the container's filesystem, answered from the pod
    spec: the token is there when the service account's is mounted; the rest (a shell for
    exec: probes, /dev/termination-log) is assumed, and no graveyard is made."""

    def __init__(self, token_mounted):
        self.token_mounted = token_mounted

    def exists(self, path):
        return True

    def is_file(self, path):
        return self.token_mounted

    def can_execute(self, path):
        return True

    def read_namespace(self, service_account_dir):
        return "default" if self.token_mounted else ""

    def check_graveyard(self, path, name):
        pass


def mount_of(container, path):
    """The volumeMount under which `path` lies (the deepest one), or None."""
    best = None
    for entry in container.get("volumeMounts") or []:
        root = (entry.get("mountPath") or "").rstrip("/") or "/"
        inside = path == root or path.startswith(root.rstrip("/") + "/")
        if inside and (best is None or len(root) > len(best[0])):
            best = (root, entry)
    return best


def graveyard_place(container, graveyard):
    """(volume, directory inside it) of the graveyard, or None when on no volume."""
    found = mount_of(container, graveyard)
    if found is None:
        return None
    root, entry = found
    inside = posixpath.normpath(posixpath.join(entry.get("subPath") or ".",
                                               posixpath.relpath(graveyard, root)))
    return entry.get("name"), inside


def container_config(container, spec, problem):
    """The container's Config as kubexit would build it in the pod, or None."""
    env = manifests.env_values(container)
    environ = dict(KUBELET_ENV)
    for name, value in env.items():
        if value is not None:
            environ[name] = value
        elif name in DOWNWARD_STAND_INS:
            environ[name] = DOWNWARD_STAND_INS[name]
        elif name == "KUBEXIT_NAME":
            environ[name] = container["name"]
    service_account_dir = environ.get("KUBEXIT_SERVICE_ACCOUNT_DIR",
                                      configuration.DEFAULT_SERVICE_ACCOUNT_DIR)
    token = spec.get("automountServiceAccountToken") is not False or \
        mount_of(container, service_account_dir) is not None
    try:
        config = configuration.load(environ, ManifestFiles(token))
    except configuration.ConfigError as err:
        problem(str(err))
        return None
    for warning in config.warnings:
        problem(warning)
    if config.api_host and (config.birth_deps or config.watch_pod) and \
            "KUBEXIT_POD_NAME" not in env:
        problem("reads the pod from the Kubernetes API but has no KUBEXIT_POD_NAME; set it "
                "from the downward API (valueFrom: fieldRef: fieldPath: metadata.name), since "
                "HOSTNAME is not the pod's name with hostNetwork or spec.hostname")
    return config


def find_cycles(edges):
    """Every cycle of a directed graph {node: [node]}, each once, as a list of nodes."""
    cycles, seen, state = [], set(), {}

    def visit(node, path):
        state[node] = "open"
        path.append(node)
        for target in edges.get(node, ()):
            if state.get(target) == "open":
                cycle = path[path.index(target):]
                turn = cycle.index(min(cycle))
                key = tuple(cycle[turn:] + cycle[:turn])
                if key not in seen:
                    seen.add(key)
                    cycles.append(list(key))
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return cycles


def lint_template(template, where):
    """The problems of one pod template, each one line."""
    spec = template["spec"]
    problems = []
    containers = list(spec["containers"]) + list(spec.get("initContainers") or [])
    names = [c["name"] for c in containers]
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    kubexits = {}   # kubexit name -> (container, config)
    places = []     # (container name, graveyard place)
    for container in containers:
        env = manifests.env_values(container)
        if not manifests.runs_kubexit(container) and not any(
                name.startswith("KUBEXIT_") for name in env):
            continue

        def problem(text, name=container["name"]):
            problems.append("%s: container %s: %s" % (where, name, text))

        if container.get("command") and not manifests.runs_kubexit(container):
            problem("sets KUBEXIT_* variables, but its command does not run kubexit")
            continue
        config = container_config(container, spec, problem)
        if config is None:
            continue
        if config.name in kubexits:
            problem("KUBEXIT_NAME=%s is also container %s's: both would write one tombstone"
                    % (config.name, kubexits[config.name][0]["name"]))
        kubexits[config.name] = (container, config)
        place = graveyard_place(container, config.graveyard)
        if place is None:
            problem("its graveyard %s is on no volume, so no other container sees its "
                    "tombstones; mount the pod's graveyard emptyDir there" % config.graveyard)
            continue
        volume = volumes.get(place[0])
        if volume is None:
            problem("mounts volume %s, which the pod does not define" % place[0])
        elif "emptyDir" not in volume:
            problem("its graveyard is on volume %s, which is not an emptyDir: tombstones of "
                    "an earlier pod would count in this one" % place[0])
        places.append((container["name"], place))
    for name, place in places[1:]:
        if place != places[0][1]:
            problems.append(
                "%s: container %s: its graveyard (volume %s, %s) is not container %s's "
                "(volume %s, %s); every kubexit of a pod must share one" % (
                    where, name, place[0], place[1], places[0][0], places[0][1][0],
                    places[0][1][1]))
    by_container = {c["name"]: kubexit_name for kubexit_name, (c, _) in kubexits.items()}
    births = {}
    for kubexit_name, (container, config) in kubexits.items():
        births[kubexit_name] = []
        for variable, deps in (("KUBEXIT_DEATH_DEPS", config.death_deps),
                               ("KUBEXIT_BIRTH_DEPS", config.birth_deps)):
            for dep in deps:
                text = dep_problem(variable, dep, config, kubexits, names, by_container)
                if text:
                    problems.append("%s: container %s: %s" % (where, container["name"], text))
                elif variable == "KUBEXIT_BIRTH_DEPS":
                    target = dep if dep in kubexits else by_container.get(dep)
                    if target:
                        births[kubexit_name].append(target)
    for cycle in find_cycles(births):
        problems.append("%s: birth deps form a cycle, so none of them ever starts: %s" % (
            where, " -> ".join(cycle + cycle[:1])))
    return problems


def dep_problem(variable, dep, config, kubexits, names, by_container):
    """Why a dep name cannot work in this pod, or None."""
    if dep in kubexits or dep in by_container:
        return None
    if dep not in names:
        import difflib

        guess = difflib.get_close_matches(dep, list(kubexits) + names, n=1)
        return "%s names %s, which is no container of this pod (containers: %s)%s" % (
            variable, dep, ", ".join(names), "; did you mean %s?" % guess[0] if guess else "")
    if variable == "KUBEXIT_DEATH_DEPS" and not config.watch_pod:
        return ("KUBEXIT_DEATH_DEPS names %s, which runs without kubexit and writes no "
                "tombstone, so its death is never seen; wrap it in kubexit or set "
                "KUBEXIT_WATCH_POD=true" % dep)
    if variable == "KUBEXIT_BIRTH_DEPS" and not config.api_host:
        return ("KUBEXIT_BIRTH_DEPS names %s, which runs without kubexit and writes no "
                "tombstone, and the Kubernetes API is off here, so it is never ready; wrap it "
                "in kubexit or probe it with KUBEXIT_WAIT_FOR" % dep)
    return None


def check_documents(documents, source):
    """(pod templates checked, problems) over every document."""
    count, problems = 0, []
    for document in documents:
        for name, template in manifests.pod_templates(document, source):
            where = "%s: %s" % (source, name)
            count += 1
            for key in misplaced_annotations(document, template):
                problems.append("%s: annotation %s is on the %s's own metadata, where it does "
                                "nothing; move it to the pod template's metadata"
                                % (where, key, document["kind"]))
            if any(key.startswith(PREFIX) for key in manifests.annotations(template)):
                template = copy.deepcopy(template)
                inject_template(template, where, Options(), lambda text: None)
            problems += lint_template(template, where)
    return count, problems
