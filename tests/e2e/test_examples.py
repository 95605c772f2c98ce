"""The examples' pods in real containers: each container its own PID and mount namespace with
kubexit as PID 1, sharing only the emptyDir volumes, kubexit side-loaded by the init container.

Run by tests/e2e/run.sh, which builds the images and passes their names in the environment.
An example that needs a kubexit feature the built pyz does not have yet (its variable is
missing from `kubexit --help`) is skipped with the reason.
"""

import json
import os
import re
import subprocess
import time
import unittest
from pathlib import Path

from job_to_pod import load_documents, plan_pod, pod_template, workload_of
from podman_pod import PodmanPod, podman, rfc3339_ns

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"
RUN_ID = os.environ.get("E2E_RUN_ID", "")
PROJECT_IMAGE = os.environ.get("E2E_PROJECT_IMAGE", "")
BASE_IMAGE = os.environ.get("E2E_BASE_IMAGE", "")
IMAGES = {"kubexit:latest": PROJECT_IMAGE, "python:3.12-slim": BASE_IMAGE}
PROXY = "cloud-sql-proxy"
KUBEXIT_LINE = re.compile(r"\bkubexit\[(?P<name>[^\]]+)\] (?P<level>[a-z]+):")
POD_TIMEOUT = 30


def proxy_stand_in():
    """The cloud-sql-proxy container as the test runs it: same args, Python, no kubexit."""
    source = (HERE / "fake_cloud_sql_proxy.py").read_text(encoding="utf-8")
    return {PROXY: {"image": BASE_IMAGE, "command": ["python3", "-u", "-c", source]}}


def kubexit_help():
    if not PROJECT_IMAGE:
        return ""
    result = podman("run", "--rm", PROJECT_IMAGE, "/usr/local/bin/kubexit", "--help")
    return result.stdout


HELP = kubexit_help()


def needs(*variables):
    missing = [v for v in variables if v not in HELP]
    return unittest.skipIf(missing, "the built kubexit lacks %s (not in --help yet)"
                           % ", ".join(missing))


def tombstone_ns(record, key):
    return rfc3339_ns(record[key])


def kubexit_lines(lines, name):
    """The lines kubexit itself wrote in container `name`."""
    return [line for line in lines
            if KUBEXIT_LINE.search(line.text)
            and KUBEXIT_LINE.search(line.text).group("name") == name]


def first_index(lines, predicate, what):
    for index, line in enumerate(lines):
        if predicate(line.text):
            return index
    raise AssertionError("no line %s in:\n%s" % (what, "\n".join(line.text for line in lines)))


def stopped_status():
    """What a kubexit exits with when it stopped CMD (SIGTERM) because a death dep died."""
    return 0 if "KUBEXIT_DEATH_EXIT_CODE" in HELP else 128 + 15


def example_files():
    return sorted(EXAMPLES.glob("*.yaml"))


def env_of(container):
    return {item["name"]: item for item in container.get("env", [])}


def env_value(container, name):
    return env_of(container).get(name, {}).get("value", "")


def names_in(value):
    return [item.strip() for item in value.split(",") if item.strip()]


class ExampleManifestTest(unittest.TestCase):
    """What every example must say, checked without running it (the API ones cannot run here)."""

    def workloads(self):
        found = [(path.name, workload_of(load_documents(path)))
                 for path in example_files() if path.name != "rbac.yaml"]
        self.assertGreaterEqual(len(found), 4)
        return found

    def test_each_example_names_restart_policy_graveyard_init_copy_and_env(self):
        allowed = {"Job": {"Never", "OnFailure"}, "Deployment": {"Always"},
                   "Pod": {"Never", "OnFailure", "Always"}}
        for filename, workload in self.workloads():
            with self.subTest(example=filename):
                spec = pod_template_spec(workload)
                self.assertIn(spec.get("restartPolicy"), allowed[workload["kind"]])
                volumes = {v["name"]: v for v in spec["volumes"]}
                copier = [c for c in spec["initContainers"] if c["command"][0] == "cp"]
                self.assertEqual(len(copier), 1, "one init container copies kubexit")
                source, target = copier[0]["command"][1:]
                self.assertEqual(source, "/usr/local/bin/kubexit")
                share = mount_holding(copier[0], target)
                self.assertIn("emptyDir", volumes[share])
                containers = {c["name"] for c in spec["containers"]}
                init_names = {c["name"] for c in spec["initContainers"]}
                supervised = [c for c in spec["containers"] if c.get("command") == [target]]
                self.assertTrue(supervised, "some container runs kubexit")
                for container in supervised:
                    self.assertEqual(mount_holding(container, target), share)
                    self.assertEqual(env_value(container, "KUBEXIT_NAME"), container["name"])
                    graveyard = env_value(container, "KUBEXIT_GRAVEYARD")
                    volume = volumes[mount_holding(container, graveyard + "/x")]
                    self.assertEqual(volume.get("emptyDir"), {"medium": "Memory"})
                    for dep in names_in(env_value(container, "KUBEXIT_DEATH_DEPS")):
                        self.assertIn(dep, containers - {container["name"]})
                    for dep in names_in(env_value(container, "KUBEXIT_BIRTH_DEPS")):
                        self.assertIn(dep, (containers | init_names) - {container["name"]})

    def test_birth_deps_through_the_api_have_their_rbac_and_pod_name(self):
        rbac = {doc["kind"]: doc for doc in load_documents(EXAMPLES / "rbac.yaml")}
        rule, = rbac["Role"]["rules"]
        self.assertEqual((rule["apiGroups"], rule["resources"]), ([""], ["pods"]))
        self.assertEqual(sorted(rule["verbs"]), ["get", "list", "watch"])
        binding = rbac["RoleBinding"]
        self.assertEqual(binding["roleRef"]["name"], rbac["Role"]["metadata"]["name"])
        subject, = binding["subjects"]
        self.assertEqual((subject["kind"], subject["name"]),
                         ("ServiceAccount", rbac["ServiceAccount"]["metadata"]["name"]))
        users = 0
        for filename, workload in self.workloads():
            spec = pod_template_spec(workload)
            for container in spec["containers"]:
                if not env_value(container, "KUBEXIT_BIRTH_DEPS"):
                    continue
                users += 1
                with self.subTest(example=filename, container=container["name"]):
                    self.assertEqual(spec.get("serviceAccountName"), subject["name"])
                    self.assertNotEqual(spec.get("automountServiceAccountToken"), False)
                    field = env_of(container)["KUBEXIT_POD_NAME"]["valueFrom"]["fieldRef"]
                    self.assertEqual(field["fieldPath"], "metadata.name")
        self.assertGreaterEqual(users, 1)


def pod_template_spec(workload):
    return pod_template(workload)["spec"]


def mount_holding(container, path):
    """The name of the volume whose mount in `container` holds `path`."""
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return mount["name"]
    raise AssertionError("%s has no volume mounted above %s" % (container["name"], path))


@unittest.skipUnless(PROJECT_IMAGE and BASE_IMAGE, "run through tests/e2e/run.sh")
class PodTestCase(unittest.TestCase):
    def run_example(self, example, short_name, restart_policy=None, replacements=None):
        workload = workload_of(load_documents(EXAMPLES / example))
        plan = plan_pod(workload, "%s-%s" % (short_name, RUN_ID), IMAGES, RUN_ID, BASE_IMAGE,
                        restart_policy=restart_policy, replacements=replacements)
        pod = PodmanPod(plan, RUN_ID)
        self.addCleanup(pod.remove)
        pod.play()
        return pod

    def assert_no_kubexit_complaints(self, pod, names):
        for name in names:
            bad = [line.text for line in kubexit_lines(pod.logs(name), name)
                   if KUBEXIT_LINE.search(line.text).group("level") in ("warn", "error")]
            self.assertEqual(bad, [], "kubexit complained in %s" % name)


class ImageTest(PodTestCase):
    def test_image_carries_an_executable_kubexit_and_cp(self):
        result = podman("run", "--rm", PROJECT_IMAGE, "sh", "-c",
                        "head -n 1 /usr/local/bin/kubexit; test -x /usr/local/bin/kubexit "
                        "&& echo executable; command -v cp; /usr/local/bin/kubexit --version")
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "#!/usr/bin/env python3")
        self.assertEqual(lines[1], "executable")
        self.assertTrue(lines[2].endswith("/cp"), lines)
        self.assertRegex(lines[3], r"^kubexit \d")


class ClientServerJobTest(PodTestCase):
    def test_server_sidecar_stops_when_client_ends(self):
        pod = self.run_example("client-server-job.yaml", "client-server")
        self.assertNotIn("pid", pod.shared_namespaces(), "each container has its own PID namespace")
        statuses = pod.wait(["client", "server"], POD_TIMEOUT)
        self.assertEqual(statuses, {"client": 0, "server": stopped_status()}, pod.describe())

        graves = pod.tombstones()
        client, server = graves["client"], graves["server"]
        self.assertEqual(client["exitcode"], "0")
        self.assertEqual(server["exitcode"], str(stopped_status()))
        self.assertLess(tombstone_ns(client, "born"), tombstone_ns(client, "died"))
        self.assertLess(tombstone_ns(server, "born"), tombstone_ns(client, "died"))
        reaction = tombstone_ns(server, "died") - tombstone_ns(client, "died")
        self.assertGreaterEqual(reaction, 0)
        self.assertLess(reaction, 5e9, "server died %.3fs after the client" % (reaction / 1e9))

        client_log = pod.logs("client")
        answered = first_index(client_log, lambda t: t.startswith("client: got "), "client got")
        self.assertTrue(KUBEXIT_LINE.search(client_log[-1].text),
                        "kubexit's exit line comes last: %r" % client_log[-1])
        self.assertLess(answered, len(client_log) - 1)
        server_log = pod.logs("server")
        served = first_index(server_log, lambda t: '"GET / HTTP/1.1" 200' in t, "GET served")
        told = first_index(server_log, lambda t: bool(KUBEXIT_LINE.search(t)) and "client" in t,
                           "where kubexit names the dead client")
        self.assertLess(served, told)
        self.assert_no_kubexit_complaints(pod, ["client", "server"])


ORPHAN_MAKER = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("client: SIGTERM", flush=True), sys.exit(0)))
print("client: parent is pid %d" % os.getppid(), flush=True)
reader, writer = os.pipe()
if os.fork() == 0:
    grandchild = os.fork()
    if grandchild == 0:
        os._exit(7)
    os.write(writer, str(grandchild).encode())
    os._exit(0)
os.wait()
orphan = int(os.read(reader, 32))
deadline = time.monotonic() + 5
while os.path.exists("/proc/%d" % orphan) and time.monotonic() < deadline:
    time.sleep(0.01)
gone = not os.path.exists("/proc/%d" % orphan)
print("client: orphan %s" % ("reaped" if gone else "left a zombie"), flush=True)
while True:
    signal.pause()
"""


class Pid1Test(PodTestCase):
    def test_kubexit_as_pid_1_reaps_orphans_and_forwards_the_stop_signal(self):
        replacements = {"client": {"args": ["python3", "-c", ORPHAN_MAKER]}}
        pod = self.run_example("client-server-job.yaml", "pid1", replacements=replacements)
        pod.wait_for_log("client", r"^client: orphan", POD_TIMEOUT)
        texts = [line.text for line in pod.logs("client")]
        self.assertIn("client: parent is pid 1", texts, "kubexit is PID 1 of the container")
        self.assertIn("client: orphan reaped", texts)

        pod.stop(["client"], 10)   # the runtime's SIGTERM goes to PID 1, kubexit
        statuses = pod.wait(["client", "server"], 30)
        self.assertEqual(statuses, {"client": 0, "server": stopped_status()}, pod.describe())
        self.assertIn("client: SIGTERM", [line.text for line in pod.logs("client")])
        graves = pod.tombstones()
        self.assertEqual(graves["client"]["exitcode"], "0")
        self.assertLessEqual(tombstone_ns(graves["client"], "died"),
                             tombstone_ns(graves["server"], "died"))


class QuitUrlJobTest(PodTestCase):
    @needs("KUBEXIT_QUIT_URLS", "KUBEXIT_WAIT_FOR")
    def test_proxy_without_python_is_told_to_quit_after_the_job(self):
        pod = self.run_example("quit-url-job.yaml", "db-migrate", replacements=proxy_stand_in())
        statuses = pod.wait(["migrate", PROXY], POD_TIMEOUT)
        self.assertEqual(statuses, {"migrate": 0, PROXY: 0}, pod.describe())

        migrate = pod.tombstones()["migrate"]
        self.assertEqual(migrate["exitcode"], "0")
        proxy_log = pod.logs(PROXY)
        ready = proxy_log[first_index(proxy_log, lambda t: "ready" in t, "proxy ready")]
        quit_call = proxy_log[first_index(proxy_log, lambda t: "quitquitquit" in t, "quit call")]
        self.assertLess(ready.time_ns, tombstone_ns(migrate, "born"), "waited for readiness")
        self.assertLess(tombstone_ns(migrate, "died"), quit_call.time_ns, "quit after Died")
        migrate_log = pod.logs("migrate")
        first_index(migrate_log, lambda t: t == "migrate: done", "from the migration")
        self.assert_no_kubexit_complaints(pod, ["migrate"])


class ProxyWaitForTest(PodTestCase):
    @needs("KUBEXIT_WAIT_FOR")
    def test_app_starts_only_once_the_proxy_is_ready(self):
        pod = self.run_example("proxy-wait-for.yaml", "app-wait-for", restart_policy="Never",
                               replacements=proxy_stand_in())
        connected = pod.wait_for_log("app", r"^app: connected", POD_TIMEOUT)
        app = pod.wait_for_tombstone("app", "born", POD_TIMEOUT)
        proxy_log = pod.logs(PROXY)
        ready = proxy_log[first_index(proxy_log, lambda t: "ready" in t, "proxy ready")]
        self.assertLess(ready.time_ns, tombstone_ns(app, "born"))
        self.assertLess(ready.time_ns, connected.time_ns)

        pod.stop(["app", PROXY], 10)
        statuses = pod.wait(["app", PROXY], 30)
        self.assertEqual(statuses["app"], 128 + 15, pod.describe())
        app = pod.tombstones()["app"]
        self.assertEqual(app["exitcode"], str(128 + 15))


class OomTest(PodTestCase):
    def test_oom_killed_main_process_still_stops_its_sidecar(self):
        """On cgroup v1 (these machines) the OOM killer takes the biggest process, CMD, and
        kubexit records it. Under cgroup v2's memory.oom.group the whole container dies at
        once: that is CrashTest's case."""
        grow = "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n"
        replacements = {"client": {"args": ["python3", "-c", grow],
                                   "resources": {"limits": {"memory": "128Mi"}}}}
        pod = self.run_example("client-server-job.yaml", "oom", replacements=replacements)
        statuses = pod.wait(["client", "server"], POD_TIMEOUT)
        self.assertEqual(statuses, {"client": 128 + 9, "server": stopped_status()},
                         pod.describe())
        graves = pod.tombstones()
        self.assertEqual(graves["client"]["exitcode"], str(128 + 9))
        self.assertLessEqual(tombstone_ns(graves["client"], "died"),
                             tombstone_ns(graves["server"], "died"))


class CrashTest(PodTestCase):
    def test_sigkilled_main_container_still_stops_its_sidecar(self):
        replacements = {"client": {"args": [
            "python3", "-u", "-c", "import time; print('client: running'); time.sleep(300)"]}}
        pod = self.run_example("client-server-job.yaml", "crash", replacements=replacements)
        pod.wait_for_tombstone("client", "born", POD_TIMEOUT)
        pod.wait_for_tombstone("server", "born", POD_TIMEOUT)
        killed_ns = time.time_ns()
        pod.kill("client", "KILL")   # kubexit is PID 1: the whole container dies at once
        statuses = pod.wait(["client", "server"], 30)
        self.assertEqual(statuses["client"], 128 + 9)
        self.assertEqual(statuses["server"], stopped_status(), pod.describe())
        graves = pod.tombstones()
        self.assertNotIn("died", graves["client"], "a SIGKILLed kubexit cannot write Died")
        reaction = tombstone_ns(graves["server"], "died") - killed_ns
        self.assertLess(reaction, 5e9, "server died %.3fs after the kill" % (reaction / 1e9))


class RestartOnFailureTest(PodTestCase):
    @needs("KUBEXIT_RESTART_POLICY")
    def test_a_main_that_fails_once_keeps_its_sidecar_until_its_second_run_succeeds(self):
        pod = self.run_example("restart-onfailure-job.yaml", "restart-once")
        self.assertEqual(pod.wait_for_exit("main", 0, POD_TIMEOUT), 1, "restarted once")
        self.assertEqual(pod.wait(["server"], POD_TIMEOUT), {"server": 0}, pod.describe())
        self.assertEqual(pod.wait_for_exit("server", 0, 1), 0, "the server never restarted")
        texts = [line.text for line in pod.logs("main")]
        self.assertIn("main: first run, reached the server, failing", texts)
        self.assertIn("main: second run, reached the server, done", texts)
        graves = pod.tombstones()
        main, server = graves["main"], graves["server"]
        self.assertEqual((main["exitcode"], main["restarts"], main["restartpolicy"]),
                         ("0", "1", "OnFailure"))
        self.assertEqual((server["exitcode"], server["restarts"]), ("0", "0"))
        self.assertLess(tombstone_ns(main, "born"), tombstone_ns(server, "died"))
        server_log = kubexit_lines(pod.logs("server"), "server")
        kept = first_index(server_log, lambda t: "the kubelet restarts it" in t,
                           "where the server's kubexit waits out the first death")
        stopped = first_index(server_log, lambda t: "stopping CMD" in t, "the final stop")
        self.assertLess(kept, stopped)
        self.assert_no_kubexit_complaints(pod, ["main", "server"])


class ShutdownOrderTest(PodTestCase):
    @needs("KUBEXIT_SHUTDOWN_ORDER")
    def test_the_proxy_outlives_its_app_when_the_pod_is_deleted(self):
        # Played with restartPolicy Never: podman 4.3 also restarts the pod's "once" init
        # container under Always, then fails to remove it while it runs. The hold does not
        # depend on it; the containers' KUBEXIT_RESTART_POLICY=Always stays as written.
        pod = self.run_example("proxy-shutdown-order.yaml", "web", restart_policy="Never")
        pod.wait_for_log("app", r"^app: proxy answered 200", POD_TIMEOUT)
        pod.stop(["app", "proxy"], 10)   # both at once, as the kubelet deletes a pod
        statuses = pod.wait(["app", "proxy"], 30)
        self.assertEqual(statuses, {"app": 0, "proxy": 0}, pod.describe())
        # The app's last request, made a second after both got SIGTERM, was answered: the
        # proxy was still serving. (Podman stamps each container's lines in its own conmon,
        # so only lines of one container are compared in time.)
        app_log = pod.logs("app")
        drained = first_index(app_log, lambda t: t.startswith("app: SIGTERM, draining for 1s"),
                              "the drain")
        last = first_index(app_log, lambda t: t.startswith(
            "app: last request through the proxy answered 200"), "the app's last request")
        self.assertLess(drained, last)
        proxy_log = pod.logs("proxy")
        held = first_index(proxy_log, lambda t: "holding SIGTERM back from CMD" in t
                           and "alive=app" in t, "the hold")
        ended = first_index(proxy_log, lambda t: 'death dependency "app" died' in t,
                            "the stop after the app's death")
        self.assertLess(held, ended)
        self.assert_no_kubexit_complaints(pod, ["app", "proxy"])


class QuickStartTest(PodTestCase):
    """The README's quick start: a plain Job through the shipped kubexit's --inject, played."""

    def test_a_plain_job_injected_completes_with_its_sidecar_stopped(self):
        if "--inject" not in HELP:
            self.skipTest("the built kubexit has no --inject")
        plain = load_documents(EXAMPLES / "quickstart" / "job.yaml")
        injected = subprocess.run(
            ["podman", "run", "--rm", "-i", PROJECT_IMAGE, "/usr/local/bin/kubexit", "--inject"],
            input=json.dumps(plain[0]), capture_output=True, text=True, timeout=60)
        self.assertEqual(injected.returncode, 0, injected.stderr)
        self.assertEqual(injected.stderr, "")
        workload = json.loads(injected.stdout)
        plan = plan_pod(workload, "quickstart-%s" % RUN_ID, IMAGES, RUN_ID, BASE_IMAGE)
        pod = PodmanPod(plan, RUN_ID)
        self.addCleanup(pod.remove)
        pod.play()
        statuses = pod.wait(["report", "proxy"], POD_TIMEOUT)
        self.assertEqual(statuses, {"report": 0, "proxy": 0}, pod.describe())
        self.assertIn("report: the proxy answered 200",
                      [line.text for line in pod.logs("report")])
        graves = pod.tombstones("kubexit-graveyard")
        report, proxy = graves["report"], graves["proxy"]
        self.assertLess(tombstone_ns(proxy, "ready"), tombstone_ns(report, "born"))
        self.assertLessEqual(tombstone_ns(report, "died"), tombstone_ns(proxy, "died"))
        self.assertEqual((report["exitcode"], proxy["exitcode"]), ("0", "0"))
        self.assert_no_kubexit_complaints(pod, ["report", "proxy"])


if __name__ == "__main__":
    unittest.main()
