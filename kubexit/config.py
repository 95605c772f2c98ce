"""The environment, validated once into a frozen Config.

Every check a user's manifest can fail happens here, before anything starts, and fails
with one ConfigError line that names the variable and the fix.
"""

import os

from kubexit.log import LEVELS
from kubexit.tombstone import RESTART_POLICIES

DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}

# Variable -> one-line description; --help prints this table and typo warnings use it.
VARIABLES = {
    "KUBEXIT_NAME": "this container's tombstone name (required)",
    "KUBEXIT_GRAVEYARD": "shared directory of tombstones (default /graveyard)",
    "KUBEXIT_DEATH_DEPS": "comma-separated names; when one dies, CMD is stopped",
    "KUBEXIT_GRACE_PERIOD": "time CMD and its descendants have after the stop signal before "
    "SIGKILL (default 30s)",
    "KUBEXIT_STOP_SIGNAL": "signal that stops CMD, by name or number (default SIGTERM)",
    "KUBEXIT_DEATH_POLICY": "any (default): stop when one death dep dies; all: when all have",
    "KUBEXIT_DEATH_EXIT_CODE": "exit status after a death dep stopped CMD: zero (default), "
    "child, dependency or a number 0-255",
    "KUBEXIT_SIGNAL_GROUP": "true (default): stop and terminating signals go to CMD's process "
    "group; false: to CMD only",
    "KUBEXIT_RESTART_POLICY": "what the kubelet does when this container exits: Never "
    "(default), OnFailure or Always; only a death it does not undo stops the death deps' "
    "dependents",
    "KUBEXIT_SHUTDOWN_ORDER": "together (default): a terminating signal reaches CMD at once; "
    "after-death-deps: held from CMD while a death dep is alive",
    "KUBEXIT_SHUTDOWN_TIMEOUT": "longest hold of a terminating signal under after-death-deps "
    "(default 20s)",
    "KUBEXIT_TERMINATION_LOG": "file that gets one line saying why kubexit ended (default "
    "/dev/termination-log when it exists; empty disables)",
    "KUBEXIT_BIRTH_DEPS": "comma-separated names that must be ready before CMD starts: by their "
    "tombstone's Ready, or by the pod's status when the Kubernetes API is configured",
    "KUBEXIT_BIRTH_TIMEOUT": "how long to wait for birth deps and wait-for probes (default 30s)",
    "KUBEXIT_BIRTH_CONDITION": "what birth deps must be: ready (default) or started",
    "KUBEXIT_READINESS_PROBE": "probe of CMD once started (tcp://HOST:PORT, http(s)://HOST:PORT/"
    "PATH, file:PATH or exec:COMMAND); when it first passes, Ready goes into the tombstone",
    "KUBEXIT_READINESS_PERIOD": "time between probe attempts (default 1s; each attempt times "
    "out after 1s)",
    "KUBEXIT_WAIT_FOR": "comma-separated probes that must all pass before CMD starts",
    "KUBEXIT_QUIT_URLS": "comma-separated http(s):// URLs POSTed to after CMD has exited and Died "
    "is written (at most 5s in all)",
    "KUBEXIT_API": "auto (default): use the Kubernetes API when it answers, else the graveyard "
    "alone; required: fail when it refuses; off: never touch it",
    "KUBEXIT_WATCH_POD": "true: a death dep with no tombstone also dies when the pod's status "
    "says its container terminated (needs the Kubernetes API, as birth deps do; default false)",
    "KUBEXIT_POD_NAME": "the pod's name (default $HOSTNAME)",
    "KUBEXIT_NAMESPACE": "the pod's namespace (default: the service account's namespace file)",
    "KUBEXIT_SERVICE_ACCOUNT_DIR": "token, ca.crt and namespace (default %s)"
    % DEFAULT_SERVICE_ACCOUNT_DIR,
    "KUBEXIT_WATCH": "auto (inotify, else polling) or poll (default auto)",
    "KUBEXIT_POLL_INTERVAL": "polling interval when polling (default 1s)",
    "KUBEXIT_LOG_FORMAT": "text (default) or json",
    "KUBEXIT_LOG_LEVEL": "debug, info (default), warn, error or off",
}

# Variables of kubexit forks, accepted with the same meaning so their manifests work as is.
ALIASES = {
    "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS": "true: KUBEXIT_DEATH_EXIT_CODE=zero; false: =child",
    "KUBEXIT_SUPPRESS_STOPPED_EXITCODE": "true: KUBEXIT_DEATH_EXIT_CODE=zero; false: =child",
    "KUBEXIT_EXIT_CODE_OVERRIDE": "always exit with this number, whatever happened",
    "KUBEXIT_CUSTOM_EXIT_CODE": "always exit with this number, whatever happened",
    "KUBEXIT_STOPSIGNAL": "same as KUBEXIT_STOP_SIGNAL",
}
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
PROBE_SHELL = "/bin/sh"
PROBE_SYNTAX = ("tcp://HOST:PORT, http://HOST:PORT/PATH, https://HOST:PORT/PATH, file:PATH or "
                "exec:COMMAND")


class ConfigError(Exception):
    """One line for the user; kubexit exits 2 without starting anything."""


class Config:
    """Frozen after construction: every part of kubexit reads the same settings."""

    __slots__ = (
        "name", "graveyard", "death_deps", "grace_period", "birth_deps", "birth_timeout",
        "birth_condition", "pod_name", "namespace", "service_account_dir", "api_host",
        "api_port", "watch", "poll_interval", "log_format", "log_level", "warnings",
        "stop_signal", "death_policy", "death_exit_code", "exit_code_override", "signal_group",
        "termination_log", "readiness_probe", "readiness_period", "wait_for", "quit_urls",
        "watch_pod", "restart_policy", "shutdown_order", "shutdown_timeout", "api",
    )

    def __init__(self, **values):
        for key in self.__slots__:
            object.__setattr__(self, key, values[key])

    def __setattr__(self, key, value):
        raise AttributeError("Config is frozen")

    @property
    def tombstone_path(self):
        return os.path.join(self.graveyard, self.name)


class Probe:
    """A parsed probe or quit URL: `kind` is tcp, http, file or exec; `text` is as written;
    `tls` for https://."""

    __slots__ = ("kind", "text", "host", "port", "path", "command", "tls")

    def __init__(self, kind, text, host=None, port=None, path=None, command=None, tls=False):
        self.kind = kind
        self.tls = tls
        self.text = text
        self.host = host
        self.port = port
        self.path = path
        self.command = command

    def __repr__(self):
        return self.text


def parse_duration(variable, text):
    """Go's time.ParseDuration syntax (300ms, 1.5s, 1h2m3s), negatives refused."""
    raw = text.strip()
    if raw == "0":
        return 0.0
    if raw.startswith("-"):
        raise ConfigError("%s=%r is negative; use a duration such as 30s" % (variable, text))
    rest = raw[1:] if raw.startswith("+") else raw
    if not rest:
        raise ConfigError("%s is empty; use a duration such as 30s" % variable)
    total = 0.0
    while rest:
        number_end = 0
        while number_end < len(rest) and (rest[number_end].isdigit() or rest[number_end] == "."):
            number_end += 1
        number = rest[:number_end]
        unit_end = number_end
        while unit_end < len(rest) and not (rest[unit_end].isdigit() or rest[unit_end] == "."):
            unit_end += 1
        unit = rest[number_end:unit_end]
        if not unit and number and number_end == len(rest) and total == 0.0:
            raise ConfigError(
                "%s=%r has no unit; write %ss (or ms, m, h)" % (variable, text, number))
        if number in ("", ".") or number.count(".") > 1 or unit not in DURATION_UNITS:
            raise ConfigError(
                "%s=%r is not a duration; use Go syntax such as 300ms, 30s, 2m or 1h30m"
                % (variable, text))
        total += float(number) * DURATION_UNITS[unit]
        rest = rest[unit_end:]
    return total


def check_name(variable, name):
    if not 1 <= len(name) <= 253:
        raise ConfigError("%s: %r must be 1 to 253 characters long" % (variable, name))
    if not NAME_CHARS.issuperset(name) or name.startswith("."):
        raise ConfigError(
            "%s: %r is not a valid name; use letters, digits, '.', '_' and '-', "
            "not starting with '.' (it names a file in the graveyard)" % (variable, name))
    return name


def parse_names(variable, text):
    """Comma list of names, each a valid one."""
    return parse_list(variable, text, check_name)


def parse_choice(variable, text, choices):
    value = text.strip().lower()
    if value == "warning" and "warn" in choices:
        value = "warn"
    if value not in choices:
        raise ConfigError("%s=%r is not one of: %s" % (variable, text, ", ".join(choices)))
    return value


def parse_bool(variable, text):
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigError("%s=%r is not a boolean; use true or false" % (variable, text))


def parse_restart_policy(variable, text):
    """Never, OnFailure or Always, in any case."""
    policy = RESTART_POLICIES.get(text.strip().lower())
    if policy is None:
        raise ConfigError("%s=%r is not a restart policy; use the pod's restartPolicy: "
                          "Never, OnFailure or Always" % (variable, text))
    return policy


def parse_exit_code(variable, text):
    value = text.strip()
    if not value.isdigit() or int(value) > 255:
        raise ConfigError("%s=%r is not an exit status; use a number from 0 to 255"
                          % (variable, text))
    return int(value)


def parse_signal(variable, text):
    """SIGTERM, TERM, term or 15; real-time signals as RTMIN+N."""
    from kubexit.process import signal_names

    value = text.strip().upper()
    if value.isdigit():
        number = int(value)
    else:
        name = value if value.startswith("SIG") else "SIG" + value
        by_name = {name: number for number, name in signal_names().items()}
        number = by_name.get(name)
        if number is None and name.startswith("SIGRTMIN+") and name[9:].isdigit():
            import _signal

            number = _signal.SIGRTMIN + int(name[9:])
    from kubexit.loop import catchable_signals

    if number not in catchable_signals() and number != 9:
        raise ConfigError("%s=%r is not a signal kubexit can send; use a name such as "
                          "SIGTERM or SIGINT, or a number" % (variable, text))
    return number


def parse_address(variable, text, authority, default_port=None):
    """HOST:PORT or [IPV6]:PORT; without a default port, the port is required."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or ":" not in host or (rest and not rest.startswith(":")):
            raise ConfigError("%s: %r has a malformed [IPv6] address; write e.g. [::1]:8080"
                              % (variable, text))
        port = rest[1:]
    else:
        host, _, port = authority.partition(":")
        if ":" in port:
            raise ConfigError("%s: %r: write an IPv6 address in brackets, e.g. [::1]:8080"
                              % (variable, text))
    if not host or not all(c.isalnum() or c in ".-_:%" for c in host):
        raise ConfigError("%s: %r has no valid host; write HOST:PORT, e.g. 127.0.0.1:8080"
                          % (variable, text))
    if not port:
        if default_port is None:
            raise ConfigError("%s: %r has no port; write HOST:PORT, e.g. 127.0.0.1:5432"
                              % (variable, text))
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("%s: %r has no valid port; use a number from 1 to 65535"
                          % (variable, text))
    return host, int(port)


def parse_http_url(variable, text):
    """http(s)://HOST[:PORT][/PATH]; the port defaults to 80 (443), the path to /."""
    scheme, separator, rest = text.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise ConfigError("%s: %r is not an http:// or https:// URL" % (variable, text))
    tls = scheme.lower() == "https"
    authority, slash, path = rest.partition("/")
    path = (slash + path).partition("#")[0] or "/"
    if "@" in authority:
        raise ConfigError("%s: %r carries credentials, which are not supported; remove "
                          "USER@ from it" % (variable, text))
    if any(c.isspace() or not c.isprintable() for c in path):
        raise ConfigError("%s: %r has spaces or control characters in its path; "
                          "percent-encode them" % (variable, text))
    host, port = parse_address(variable, text, authority, 443 if tls else 80)
    return Probe("http", text, host, port, path, tls=tls)


def parse_probe(variable, text):
    """tcp://HOST:PORT, http://HOST:PORT/PATH, file:PATH or exec:COMMAND (run by /bin/sh -c)."""
    lowered = text.lower()
    if lowered.startswith("tcp://"):
        authority = text[6:]
        if "/" in authority:
            raise ConfigError("%s: %r: a tcp:// probe takes HOST:PORT only, no path"
                              % (variable, text))
        host, port = parse_address(variable, text, authority)
        return Probe("tcp", text, host, port)
    if lowered.startswith(("http://", "https://")):
        return parse_http_url(variable, text)
    if lowered.startswith("file:"):
        path = text[5:]
        path = path[2:] if path.startswith("//") else path
        if not path.strip():
            raise ConfigError("%s: %r names no file; write file:/PATH" % (variable, text))
        return Probe("file", text, path=os.path.abspath(path))
    if lowered.startswith("exec:"):
        command = text[5:].strip()
        if not command:
            raise ConfigError("%s: %r has no command; write exec:COMMAND" % (variable, text))
        return Probe("exec", text, command=command)
    raise ConfigError("%s: %r is not a probe; use %s" % (variable, text, PROBE_SYNTAX))


def parse_list(variable, text, parse):
    """Comma list: items trimmed, empty ones dropped, duplicates ignored, each parse()d."""
    items = []
    for item in text.split(","):
        item = item.strip()
        if item and item not in items:
            items.append(item)
    return tuple(parse(variable, item) for item in items)


def first_of(environ, variables, parse):
    """The value set by any of `variables`; two that disagree are a configuration error."""
    chosen = None
    for variable in variables:
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        value = parse(variable, raw)
        if chosen is not None and chosen[1] != value:
            raise ConfigError("%s and %s disagree (%s vs %s); set only one of them"
                              % (chosen[0], variable, chosen[2], raw))
        chosen = chosen or (variable, value, raw)
    return chosen


def death_exit_code(variable, text):
    """zero, child, dependency or a number; the forks' booleans map onto zero/child."""
    if variable in ("KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS", "KUBEXIT_SUPPRESS_STOPPED_EXITCODE"):
        return "zero" if parse_bool(variable, text) else "child"
    value = text.strip().lower()
    if value in ("zero", "child", "dependency"):
        return value
    if value.isdigit():
        return parse_exit_code(variable, value)
    raise ConfigError("%s=%r is not one of zero, child, dependency or a number 0-255"
                      % (variable, text))


def closest_variable(unknown, known):
    import difflib

    match = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
    return match[0] if match else None


def check_graveyard(path, name):
    """The graveyard must be a writable directory; create it if missing, never replace a file."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise ConfigError(
            "KUBEXIT_GRAVEYARD=%s exists and is not a directory; point it at the shared "
            "emptyDir mount" % path) from None
    except OSError as err:
        raise ConfigError(
            "KUBEXIT_GRAVEYARD=%s cannot be created (%s); mount the shared emptyDir there"
            % (path, err.strerror)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            "KUBEXIT_GRAVEYARD=%s is not writable; mount the shared emptyDir read-write" % path)
    tombstone = os.path.join(path, name)
    if os.path.lexists(tombstone) and not os.path.isfile(tombstone):
        raise ConfigError(
            "%s exists and is not a regular file; remove it or change KUBEXIT_NAME" % tombstone)


class LocalFiles:
    """What load() asks of the container it runs in. `kubexit --check` answers the same
    questions from a manifest instead, so both share every validation rule."""

    def exists(self, path):
        return os.path.exists(path)

    def is_file(self, path):
        return os.path.isfile(path)

    def can_execute(self, path):
        return os.access(path, os.X_OK)

    def read_namespace(self, service_account_dir):
        try:
            with open(os.path.join(service_account_dir, "namespace")) as file:
                return file.read().strip()
        except OSError:
            return ""

    def check_graveyard(self, path, name):
        check_graveyard(path, name)


LOCAL_FILES = LocalFiles()


def policies(environ, files):
    """Stop and exit policies, including the forks' spellings of them."""
    death = first_of(environ, ("KUBEXIT_DEATH_EXIT_CODE", "KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS",
                               "KUBEXIT_SUPPRESS_STOPPED_EXITCODE"), death_exit_code)
    override = first_of(environ, ("KUBEXIT_EXIT_CODE_OVERRIDE", "KUBEXIT_CUSTOM_EXIT_CODE"),
                        parse_exit_code)
    if death and override:
        raise ConfigError("%s and %s conflict: %s fixes every exit status; set only one"
                          % (death[0], override[0], override[0]))
    stop = first_of(environ, ("KUBEXIT_STOP_SIGNAL", "KUBEXIT_STOPSIGNAL"), parse_signal)
    termination_log = environ.get("KUBEXIT_TERMINATION_LOG")
    if termination_log is None:
        termination_log = DEFAULT_TERMINATION_LOG if files.exists(
            DEFAULT_TERMINATION_LOG) else ""
    group = environ.get("KUBEXIT_SIGNAL_GROUP", "").strip()
    return {
        "stop_signal": stop[1] if stop else 15,
        "death_policy": parse_choice("KUBEXIT_DEATH_POLICY",
                                     environ.get("KUBEXIT_DEATH_POLICY", "").strip() or "any",
                                     ("any", "all")),
        "death_exit_code": death[1] if death else "zero",
        "exit_code_override": override[1] if override else None,
        "signal_group": parse_bool("KUBEXIT_SIGNAL_GROUP", group) if group else True,
        "termination_log": termination_log.strip(),
    }


def probes(get, files):
    """Readiness, wait-for probes and quit URLs, each checked in full before anything starts."""
    readiness = get("KUBEXIT_READINESS_PROBE")
    period = parse_duration("KUBEXIT_READINESS_PERIOD", get("KUBEXIT_READINESS_PERIOD", "1s"))
    if period <= 0:
        raise ConfigError("KUBEXIT_READINESS_PERIOD must be more than 0, e.g. 1s")
    found = {
        "readiness_probe": parse_probe("KUBEXIT_READINESS_PROBE", readiness) if readiness
        else None,
        "readiness_period": period,
        "wait_for": parse_list("KUBEXIT_WAIT_FOR", get("KUBEXIT_WAIT_FOR"), parse_probe),
        "quit_urls": parse_list("KUBEXIT_QUIT_URLS", get("KUBEXIT_QUIT_URLS"), parse_http_url),
    }
    for variable, probe in [("KUBEXIT_READINESS_PROBE", found["readiness_probe"])] + [
            ("KUBEXIT_WAIT_FOR", p) for p in found["wait_for"]]:
        if probe is not None and probe.kind == "exec" and not files.can_execute(PROBE_SHELL):
            raise ConfigError("%s: exec: probes run %s -c COMMAND, and this image has no %s; "
                              "use a tcp://, http:// or file: probe" % (variable, PROBE_SHELL,
                                                                       PROBE_SHELL))
    return found


def load(environ, files=LOCAL_FILES):
    """Build the Config from an environment mapping, or raise ConfigError. `files` answers
    what the container's filesystem holds (the graveyard is created when missing)."""
    def get(variable, default=""):
        value = environ.get(variable)
        return default if value is None or not value.strip() else value.strip()

    name = get("KUBEXIT_NAME")
    if not name:
        raise ConfigError(
            "KUBEXIT_NAME is not set; set it to this container's name, "
            "e.g. KUBEXIT_NAME=app")
    check_name("KUBEXIT_NAME", name)

    known = set(VARIABLES) | set(ALIASES)
    warnings = []
    for variable in sorted(environ):
        if variable.startswith("KUBEXIT_") and variable not in known:
            guess = closest_variable(variable, known)
            hint = "; did you mean %s?" % guess if guess else ""
            warnings.append("unknown variable %s is ignored%s" % (variable, hint))

    graveyard = os.path.abspath(get("KUBEXIT_GRAVEYARD", "/graveyard"))
    birth_deps = parse_names("KUBEXIT_BIRTH_DEPS", get("KUBEXIT_BIRTH_DEPS"))
    service_account_dir = get("KUBEXIT_SERVICE_ACCOUNT_DIR", DEFAULT_SERVICE_ACCOUNT_DIR)
    api_host = get("KUBERNETES_SERVICE_HOST")
    api_port = get("KUBERNETES_SERVICE_PORT", "443")
    pod_name = get("KUBEXIT_POD_NAME", get("HOSTNAME"))
    namespace = get("KUBEXIT_NAMESPACE")
    watch_pod = parse_bool("KUBEXIT_WATCH_POD", get("KUBEXIT_WATCH_POD", "false"))
    if watch_pod and not get("KUBEXIT_DEATH_DEPS"):
        warnings.append("KUBEXIT_WATCH_POD=true does nothing without KUBEXIT_DEATH_DEPS")
    restart_policy = get("KUBEXIT_RESTART_POLICY") or None
    api = parse_choice("KUBEXIT_API", get("KUBEXIT_API", "auto"), ("auto", "required", "off"))
    if watch_pod and api == "off":
        raise ConfigError("KUBEXIT_WATCH_POD=true needs the Kubernetes API, which KUBEXIT_API=off "
                          "forbids; unset one of them")
    if watch_pod and not api_host:
        raise ConfigError(
            "KUBEXIT_WATCH_POD=true needs the Kubernetes API, but KUBERNETES_SERVICE_HOST is not "
            "set; run kubexit in a pod (the kubelet sets it) or unset KUBEXIT_WATCH_POD")
    if api == "required" and birth_deps and not api_host:
        raise ConfigError(
            "KUBEXIT_API=required, but KUBERNETES_SERVICE_HOST is not set; run kubexit in a pod "
            "(the kubelet sets it) or set KUBEXIT_API=auto")
    token_path = os.path.join(service_account_dir, "token")
    if api == "off" or (api == "auto" and not watch_pod and birth_deps and api_host
                        and not files.is_file(token_path)):
        if api == "auto":
            warnings.append(
                "no service-account token at %s, so birth deps are followed in the graveyard "
                "alone; for the pod's status set automountServiceAccountToken: true (or "
                "KUBEXIT_API=off to silence this)" % token_path)
        api_host = ""
    # Without the API, birth deps are followed through the graveyard alone.
    api_users = [v for v, used in (("KUBEXIT_BIRTH_DEPS", birth_deps),
                               ("KUBEXIT_WATCH_POD", watch_pod)) if used]
    if api_users and api_host:
        if not api_port.isdigit() or not 0 < int(api_port) < 65536:
            raise ConfigError(
                "KUBERNETES_SERVICE_PORT=%r is not a port number (1-65535)" % api_port)
        if not files.is_file(token_path):
            raise ConfigError(
                "%s %s a service-account token, but %s/token does not exist; "
                "set automountServiceAccountToken: true on the pod (or fix "
                "KUBEXIT_SERVICE_ACCOUNT_DIR)" % (" and ".join(api_users),
                                                  "need" if len(api_users) > 1 else "needs",
                                                  service_account_dir))
        if not pod_name:
            raise ConfigError(
                "KUBEXIT_POD_NAME is not set and neither is HOSTNAME; set KUBEXIT_POD_NAME "
                "from the downward API (fieldRef: metadata.name)")
        namespace = namespace or files.read_namespace(service_account_dir)
        if not namespace:
            raise ConfigError(
                "KUBEXIT_NAMESPACE is not set and %s/namespace is missing; set "
                "KUBEXIT_NAMESPACE from the downward API (fieldRef: metadata.namespace)"
                % service_account_dir)

    values = dict(
        name=name,
        graveyard=graveyard,
        death_deps=parse_names("KUBEXIT_DEATH_DEPS", get("KUBEXIT_DEATH_DEPS")),
        grace_period=parse_duration("KUBEXIT_GRACE_PERIOD", get("KUBEXIT_GRACE_PERIOD", "30s")),
        birth_deps=birth_deps,
        birth_timeout=parse_duration(
            "KUBEXIT_BIRTH_TIMEOUT", get("KUBEXIT_BIRTH_TIMEOUT", "30s")),
        birth_condition=parse_choice(
            "KUBEXIT_BIRTH_CONDITION", get("KUBEXIT_BIRTH_CONDITION", "ready"),
            ("ready", "started")),
        pod_name=pod_name,
        namespace=namespace,
        service_account_dir=service_account_dir,
        api_host=api_host,
        api_port=int(api_port) if api_port.isdigit() else 443,
        watch=parse_choice("KUBEXIT_WATCH", get("KUBEXIT_WATCH", "auto"), ("auto", "poll")),
        poll_interval=parse_duration(
            "KUBEXIT_POLL_INTERVAL", get("KUBEXIT_POLL_INTERVAL", "1s")),
        log_format=parse_choice(
            "KUBEXIT_LOG_FORMAT", get("KUBEXIT_LOG_FORMAT", "text"), ("text", "json")),
        log_level=parse_choice("KUBEXIT_LOG_LEVEL", get("KUBEXIT_LOG_LEVEL", "info"),
                               tuple(LEVELS)),
        watch_pod=watch_pod,
        api=api,
        restart_policy=restart_policy and parse_restart_policy("KUBEXIT_RESTART_POLICY",
                                                               restart_policy),
        shutdown_order=parse_choice("KUBEXIT_SHUTDOWN_ORDER",
                                    get("KUBEXIT_SHUTDOWN_ORDER", "together"),
                                    ("together", "after-death-deps")),
        shutdown_timeout=parse_duration("KUBEXIT_SHUTDOWN_TIMEOUT",
                                        get("KUBEXIT_SHUTDOWN_TIMEOUT", "20s")),
        **policies(environ, files),
        **probes(get, files),
    )
    values["warnings"] = tuple(warnings) + combination_warnings(values)
    config = Config(**values)
    if config.poll_interval <= 0:
        raise ConfigError("KUBEXIT_POLL_INTERVAL must be more than 0, e.g. 1s")
    if config.name in config.death_deps:
        raise ConfigError(
            "KUBEXIT_DEATH_DEPS names this container itself (%s); remove it" % config.name)
    files.check_graveyard(graveyard, name)
    return config


def combination_warnings(values):
    """Settings that are each valid but together cannot end well."""
    found = []
    policy = values["restart_policy"]
    override = values["exit_code_override"]
    stopped = "exit code override %d" % override if override is not None \
        else "KUBEXIT_DEATH_EXIT_CODE=%s" % values["death_exit_code"]
    if policy == "OnFailure" and values["death_deps"] and (
            override if override is not None else values["death_exit_code"]) not in (
            0, "zero", "dependency"):
        found.append(
            "KUBEXIT_RESTART_POLICY=OnFailure, and a CMD stopped by its death deps exits "
            "non-zero here (%s), so the kubelet restarts this container, which stops again at "
            "once; use KUBEXIT_DEATH_EXIT_CODE=zero" % stopped)
    if policy == "Always" and values["death_deps"] and values["shutdown_order"] == "together":
        found.append(
            "KUBEXIT_RESTART_POLICY=Always with KUBEXIT_DEATH_DEPS: in a pod that restarts "
            "its containers, only a Never or OnFailure dep can die for good, and a stopped "
            "CMD is restarted at once; to outlive the deps on shutdown, set "
            "KUBEXIT_SHUTDOWN_ORDER=after-death-deps")
    if values["shutdown_order"] == "after-death-deps" and not values["death_deps"]:
        found.append("KUBEXIT_SHUTDOWN_ORDER=after-death-deps does nothing without "
                     "KUBEXIT_DEATH_DEPS")
    return tuple(found)


def failed_start_record(environ):
    """(tombstone path, restart policy) for a run that ends before it could start, when
    KUBEXIT_NAME and the graveyard are themselves valid: siblings must learn of it. None
    when they are not, or the graveyard is not there to write in."""
    name = (environ.get("KUBEXIT_NAME") or "").strip()
    graveyard = os.path.abspath((environ.get("KUBEXIT_GRAVEYARD") or "").strip() or "/graveyard")
    try:
        check_name("KUBEXIT_NAME", name)
    except ConfigError:
        return None
    path = os.path.join(graveyard, name)
    if not os.path.isdir(graveyard) or not os.access(graveyard, os.W_OK | os.X_OK) or (
            os.path.lexists(path) and not os.path.isfile(path)):
        return None
    try:
        policy = parse_restart_policy("", environ.get("KUBEXIT_RESTART_POLICY") or "Never")
    except ConfigError:
        policy = None
    return path, policy
