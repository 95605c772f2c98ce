"""Birth deps: reaction from the API server marking the last dep ready to CMD starting,
the requests it takes, its wakeups while waiting, and its peak RSS while it waits.

The API server is the faithful test server (tests/kube/apiserver.py) in this process,
over real TLS on loopback. CMD is a probe that prints the CLOCK_MONOTONIC time at which
it started; the server stamps the same clock just before it writes the MODIFIED event
that makes the last dep ready. kubexit and the baseline (a minimal standard-library
HTTPS list+watch client that posix_spawns the same probe; the least a supervisor can do)
take turns, each run with a fresh process that has settled (asleep) before the change.
Memory: VmHWM of kubexit settled in the wait, beside an idle interpreter's and the
baseline client's.
"""

import os
import sys
import time

import harness

sys.path.insert(0, os.path.dirname(harness.BENCH_DIR))

from kube.apiserver import ApiServer  # noqa: E402
from kube.certs import make_certs  # noqa: E402

RUNS = 30
REACTION_BOUND_MS = 5.0
MEMORY_BOUND_MIB = 20.0
IDLE_WINDOW = 1.0
# The baseline: list, watch from the list's resourceVersion, spawn CMD when the dep is ready.
WATCH_CLIENT = r"""
import http.client, json, os, ssl, sys
env = os.environ
sa = env["KUBEXIT_SERVICE_ACCOUNT_DIR"]
token = open(sa + "/token").read().strip()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
path = "/api/v1/namespaces/%s/pods?fieldSelector=metadata.name%%3D%s" % (
    env["KUBEXIT_NAMESPACE"], env["KUBEXIT_POD_NAME"])
headers = {"Authorization": "Bearer " + token}
def ready(pod):
    statuses = pod["status"].get("containerStatuses", [])
    return any(s["name"] == env["KUBEXIT_BIRTH_DEPS"] and s["ready"] for s in statuses)
conn = http.client.HTTPSConnection(env["KUBERNETES_SERVICE_HOST"],
                                   int(env["KUBERNETES_SERVICE_PORT"]), context=ctx)
conn.request("GET", path, headers=headers)
body = json.loads(conn.getresponse().read())
if not (body["items"] and ready(body["items"][0])):
    conn.request("GET", path + "&watch=1&resourceVersion=" + body["metadata"]["resourceVersion"],
                 headers=headers)
    response = conn.getresponse()
    while not ready(json.loads(response.readline())["object"]):
        pass
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
os.waitpid(pid, 0)
"""


class Waiter:
    """One supervisor (kubexit or the baseline) waiting for pod `pod`'s proxy to become ready."""

    def __init__(self, argv, api, pod, stderr_path):
        env = harness.kubexit_env(
            os.path.join(os.path.dirname(stderr_path), "graveyard"),
            "bench",
            KUBEXIT_BIRTH_DEPS="proxy",
            KUBEXIT_BIRTH_TIMEOUT="30s",
            **api.env(pod),
        )
        self.api, self.pod, self.stderr_path = api, pod, stderr_path
        self.read_fd, write_fd = os.pipe()
        err_fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        watches = len(api.requests_of("watch"))
        try:
            self.pid = harness.spawn(argv, env, stdout=write_fd, stderr=err_fd)
        finally:
            os.close(write_fd)
            os.close(err_fd)
        try:
            api.wait_until(lambda s: len(s.requests_of("watch")) > watches and s.open_watches, 10)
            harness.wait_quiet(self.pid, 10.0)
        except (AssertionError, TimeoutError) as error:
            self.abort()
            raise RuntimeError("%s%s" % (error, self.stderr_tail())) from None

    def trigger(self):
        """Make the dep ready; ns from the server writing that event to CMD starting."""
        sent = len(self.api.events_sent)
        self.api.ready(self.pod, "proxy")
        try:
            started = int(harness.read_line(self.read_fd, 10.0, "CMD to start"))
        except (TimeoutError, EOFError) as error:
            self.abort()
            raise RuntimeError("%s%s" % (error, self.stderr_tail())) from None
        written = self.api.events_sent[sent][0]
        status = harness.wait_exit(self.pid)
        os.close(self.read_fd)
        if status != 0:
            raise RuntimeError("supervisor exited %d%s" % (status, self.stderr_tail()))
        return started - int(written * 1e9)

    def wakeups(self, seconds):
        """Context switches of all kubexit's threads over `seconds` of waiting."""
        before = harness.context_switches(self.pid)
        time.sleep(seconds)
        return harness.context_switches(self.pid) - before

    def peak_rss_mib(self):
        return harness.peak_rss_mib(self.pid)

    def abort(self):
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.read_fd)

    def stderr_tail(self):
        with open(self.stderr_path, errors="replace") as err:
            return "; its stderr: " + err.read()[-2000:].strip()


def measure(args, api, space, probe):
    client = os.path.join(space.root, "watch_client.py")
    with open(client, "w") as out:
        out.write(WATCH_CLIENT)
    commands = {
        "kubexit": [args.python, args.pyz] + probe,
        "baseline": [args.python, client] + probe,
    }
    reactions = {"kubexit": [], "baseline": []}
    peaks = {"kubexit": [], "baseline": []}
    requests, wakeups = None, None
    for run in range(RUNS):
        order = ["kubexit", "baseline"] if run % 2 == 0 else ["baseline", "kubexit"]
        for who in order:
            pod = "web-%s-%d" % (who, run)
            api.add_pod(pod, containers=["app", "proxy"])
            before = len(api.requests)
            waiter = Waiter(commands[who], api, pod, os.path.join(space.root, who + ".stderr"))
            peaks[who].append(waiter.peak_rss_mib())
            if who == "kubexit" and wakeups is None:
                wakeups = waiter.wakeups(IDLE_WINDOW)
            reactions[who].append(waiter.trigger() / 1e6)
            if who == "kubexit" and requests is None:
                requests = [r.kind for r in api.requests[before:]]
    return reactions, peaks, requests, wakeups


def main():
    args = harness.parse_args(__doc__)
    harness.announce("bench_birth", args.python)
    with harness.Workspace() as space:
        certs = make_certs(os.path.join(space.root, "certs"))
        probe, probe_name = harness.start_probe(space.root, args.python)
        with ApiServer(certs, os.path.join(space.root, "serviceaccount")) as api:
            reactions, peaks, requests, wakeups = measure(args, api, space, probe)
    value, base = harness.median(reactions["kubexit"]), harness.median(reactions["baseline"])
    harness.report(
        "birth reaction (dep ready -> CMD)",
        value,
        "ms",
        "stdlib watch client",
        base,
        "<=%g ms" % REACTION_BOUND_MS,
        value <= REACTION_BOUND_MS,
        value / base,
        note="median of %d; p90 %.3f ms vs %.3f ms; %s; TLS on loopback"
        % (
            RUNS,
            harness.percentile(reactions["kubexit"], 0.9),
            harness.percentile(reactions["baseline"], 0.9),
            probe_name,
        ),
    )
    harness.report(
        "birth requests (happy path)",
        len(requests),
        "",
        "minimum",
        2,
        "1 list + 1 watch",
        requests == ["list", "watch"],
        note=", ".join(requests),
    )
    harness.report(
        "birth wait wakeups",
        wakeups,
        "",
        "none",
        0,
        "0 in %gs" % IDLE_WINDOW,
        wakeups == 0,
        note="context switches of every thread while waiting: no polling",
    )
    peak, idle = max(peaks["kubexit"]), harness.idle_peak(args.python)
    harness.report(
        "memory peak RSS (birth wait)",
        peak,
        "MiB",
        "idle python",
        idle,
        "<=%g MiB" % MEMORY_BOUND_MIB,
        peak <= MEMORY_BOUND_MIB,
        peak / idle,
        note="VmHWM, worst of %d; the stdlib watch client: %.1f MiB"
        % (RUNS, max(peaks["baseline"])),
    )


if __name__ == "__main__":
    main()
