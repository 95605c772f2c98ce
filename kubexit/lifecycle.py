"""The lifecycle of one supervised command, in the order of the contract's section 4.

It wires the parts together and decides; the parts do the work: DeathWatch (final
deaths of death deps), GraveyardBirths and BirthWatch (birth deps, in the graveyard and
through the Kubernetes API, each dep by whichever says it is ready first), Prober
(wait-for and readiness probes), Child (the process tree), tombstone (the record),
QuitCalls (quit URLs) and EventLoop (all waiting).
"""

import _signal
import gc

from kubexit import tombstone
from kubexit.liveness import LivenessLock
from kubexit.log import utc_timestamp, write_termination_message
from kubexit.loop import EventLoop
from kubexit.process import (
    TERMINATING,
    Child,
    SpawnError,
    become_subreaper,
    owns_foreground_terminal,
    signal_name,
)

EXIT_BUG = 70  # EX_SOFTWARE: kubexit failed, whatever CMD did
# Only a terminal sends these, to kubexit itself: never forward them when it has one.
TERMINAL_STOPS = (_signal.SIGTTIN, _signal.SIGTTOU)


class Lifecycle:
    def __init__(self, config, log, argv):
        self.config = config
        self.log = log
        self.loop = EventLoop()
        self.child = Child(argv, log, config.signal_group)
        self.record = tombstone.first_record(config.tombstone_path,
                                             config.restart_policy or "Never")
        self.liveness = LivenessLock(config.graveyard, config.name, log)
        self.ending = None      # (status, reason, failed) once kubexit must end without CMD
        self.killed_by = None   # (dep name, its tombstone) once a death dep stopped CMD
        self.readiness = None   # the Prober of CMD's readiness, while it probes
        self.deaths = None      # the DeathWatch, when there are death deps
        self.pod = None         # the one follower of the pod's status, when anything reads it
        self.held = None        # a terminating signal held from CMD (after-death-deps)
        self.hold_timer = None  # set while it is held

    def run(self):
        """Steps 2 to 6; step 1 (validation) happened when the Config was built."""
        take_terminal = self.config.signal_group and owns_foreground_terminal()
        self.loop.catch_signals(self._on_signal, TERMINAL_STOPS if take_terminal else ())
        if self.config.death_deps:
            self._scan_death_deps()
        if self.ending is None:
            self._adopt_orphans()
        if self.ending is None and (self.config.birth_deps or self.config.wait_for):
            # Forked now, exec'd when the deps are met: a fork after the API client and
            # its thread are loaded costs ~2.5 ms more, between the news and CMD.
            self.child.hold(take_terminal)
            if self.deaths is not None:
                self._follow_death_deps()  # a death dep dying ends the wait
            self._wait_before_start()
        if self.ending is not None:
            self.child.cancel()
            return self._end(*self.ending)
        born = utc_timestamp()
        try:
            pid = self.child.spawn(take_terminal)
        except SpawnError as err:
            return self._end(err.status, str(err), failed=True)
        # CMD first, the bookkeeping after: the lock is still taken before Born is
        # written, and held until Died is (a crash frees it).
        self.liveness.acquire(born)
        self.record.born = born
        self._write_tombstone()
        self.log.info("started CMD", pid=pid, cmd=self.child.argv[0],
                      restarts=self.record.restarts)
        if self.config.readiness_probe is not None:
            self._probe_readiness()
        if self.deaths is not None and not self.deaths.following:
            self._follow_death_deps()  # it looks again: nothing since the scan is missed
        start_collecting()
        self.loop.run_until(lambda: not self.child.running)
        if self.readiness is not None:
            self.readiness.close()
        status, reason = self._cmd_ended()
        if not self.child.alone:
            self.child.stop_leftovers(self.loop, self.config.grace_period)
            self.loop.run_until(lambda: self.child.alone)
        return self._end(status, reason)

    def _adopt_orphans(self):
        """Become a subreaper before CMD's process exists: a shell that backgrounds a
        process and exits orphans it within a millisecond of its exec. The prctl costs
        ~0.5 ms (loading _ctypes; none as PID 1), done before the fork rather than beside
        the exec, where the child waits for kubexit's core and pays copy-on-write faults."""
        if not become_subreaper():
            self.log.warn("cannot become a child subreaper: processes that leave CMD's "
                          "process group may outlive it")

    def _scan_death_deps(self):
        """Step 2's scan: a death dep already dead for good means CMD never starts. The
        watch (inotify, lock waits, the pod's status) is armed after CMD's exec when
        nothing is waited for before it: off the path to exec."""
        from kubexit.deaths import DeathWatch

        self.deaths = DeathWatch(self.config, self.log, self.loop, self._on_death,
                                 self._pod_follower)
        self.deaths.scan()

    def _follow_death_deps(self):
        self.deaths.start()
        self.log.debug("watching death deps", deps=",".join(self.config.death_deps),
                       mode=self.deaths.siblings.kind, policy=self.config.death_policy)

    def _wait_before_start(self):
        """Step 3: every birth dep ready (in the graveyard, or by the pod's status when the
        API is used) and every wait-for probe passing, within the birth timeout."""
        config = self.config
        births = api = probes = None
        if config.birth_deps:
            births, api = self._watch_birth_deps()
        if config.wait_for:
            from kubexit.probe import Prober

            self.log.info("waiting for probes", probes=",".join(p.text for p in config.wait_for))
            probes = Prober(config.wait_for, config.readiness_period, self.log, self.loop,
                            lambda probe: self.log.info("probe passed", probe=probe.text))

        def waiting_for():
            ready = births.met | api.met if api is not None else births.met
            return [dep for dep in config.birth_deps if dep not in ready]

        def timed_out():
            missing = []
            if births is not None and waiting_for():
                missing.append("birth deps not %s after %gs: %s" % (
                    config.birth_condition, config.birth_timeout, "; ".join(
                        "%s (%s)" % (dep, why_not(dep, births, api)) for dep in waiting_for())))
            if probes is not None and not probes.all_passed:
                missing.append("wait-for probes not passing after %gs: %s" % (
                    config.birth_timeout, probes.failing()))
            self._end_without_cmd(1, "; ".join(missing), failed=True)

        timer = self.loop.call_later(config.birth_timeout, timed_out)
        start_collecting()
        try:
            self.loop.run_until(lambda: self.ending is not None or (
                (births is None or not waiting_for()) and (probes is None or probes.all_passed)))
        finally:
            timer.cancel()
            for source in (births, api, probes):
                if source is not None:
                    source.close()
            self._close_idle_pod_follower()
        if self.ending is None and births is not None:
            self.log.info("birth deps are " + config.birth_condition,
                          deps=",".join(config.birth_deps))

    def _watch_birth_deps(self):
        """The graveyard always; the pod's status too when the Kubernetes API is used."""
        from kubexit.graveyard_births import GraveyardBirths

        config = self.config
        self.log.info("waiting for birth deps", deps=",".join(config.birth_deps),
                      condition=config.birth_condition,
                      via="graveyard,api" if config.api_host else "graveyard")
        births = GraveyardBirths(config, self.log, self.loop, self._birth_dep_gone)
        births.start()
        api = PodStatus(config, self.log, self._pod_follower(), self._end_without_cmd) if (
            config.api_host and self.ending is None) else None
        return births, api

    def _pod_follower(self):
        """The pod's status, read by one follower (one list, one watch) for every reader:
        birth deps, KUBEXIT_WATCH_POD and the restart policy of the pod's spec."""
        if self.pod is None:
            from kubexit.podwatch import PodFollower

            self.pod = PodFollower(self.config, self.log, self._pod_restart_policy)
            self.loop.add_reader(self.pod.fileno(), self.pod.readable)
        return self.pod

    def _close_idle_pod_follower(self):
        """Once nobody reads it; a join, so on the loop's next turn (after the spawn)."""
        if self.pod is not None and self.pod.idle:
            follower, self.pod = self.pod, None
            self.loop.remove_reader(follower.fileno())
            self.loop.call_later(0, follower.close)

    def _pod_restart_policy(self, policy):
        """The pod's spec, read for birth deps or KUBEXIT_WATCH_POD, says what the kubelet
        does when this container exits: it fills an unset KUBEXIT_RESTART_POLICY (in the
        tombstone at once, if Born is already there), and contradicts a set one."""
        configured = self.config.restart_policy
        if configured is None and policy != self.record.restart_policy:
            self.record.restart_policy = policy
            self.log.info("restart policy from the pod's spec", restart_policy=policy)
            if self.record.born is not None and self.record.died is None:
                self._write_tombstone()
        elif configured is not None and configured != policy:
            self.log.warn("KUBEXIT_RESTART_POLICY=%s, but the pod's spec says %s for container "
                          "%s; the tombstone keeps %s: fix KUBEXIT_RESTART_POLICY"
                          % (configured, policy, self.config.name, configured))

    def _birth_dep_gone(self, name, sibling):
        if name in self.config.death_deps:
            return  # the death watch reads the same tombstone: death deps' rules decide
        self._end_without_cmd(1, 'birth dependency "%s" died for good (%s): it will never be '
                              'ready' % (name, sibling.describe()), failed=True)

    def _probe_readiness(self):
        """After Born: probe CMD until it first passes, then add Ready to the tombstone."""
        from kubexit.probe import Prober

        def passed(probe):
            if self.child.running and self.record.ready is None:
                self.record.ready = utc_timestamp()
                self.log.info("CMD is ready", probe=probe.text)
                self._write_tombstone()
            self.readiness.close()
            self.readiness = None

        self.readiness = Prober((self.config.readiness_probe,), self.config.readiness_period,
                                self.log, self.loop, passed)

    def _on_death(self, name, record):
        if self.child.running:
            self.killed_by = (name, record)
            self.child.stop(self.loop, self.config.stop_signal, self.config.grace_period)
            # Logged after the signal: the reaction time is a feature.
            self.log.info('death dependency "%s" died%s: stopping CMD' % (
                name, with_exit_code(record)), signal=signal_name(self.config.stop_signal),
                grace_period="%gs" % self.config.grace_period)
            if self.hold_timer is not None:
                self._stop_holding("the death deps have died")
        elif self.child.pid is None:
            self._end_without_cmd(self._death_status(name, record, None),
                                  'not started: death dependency "%s" had died%s'
                                  % (name, with_exit_code(record)))

    def _on_signal(self, signum):
        if signum == _signal.SIGCHLD:
            self.child.reap()
        elif self.child.pid is not None:
            if signum in TERMINATING and self._holds(signum):
                return
            self.log.debug("forwarding signal", signal=signal_name(signum))
            self.child.forward(signum)
        elif signum in TERMINATING:
            self._end_without_cmd(128 + signum, "received %s before CMD started"
                                  % signal_name(signum))
        else:
            self.log.debug("ignoring signal", signal=signal_name(signum))

    def _holds(self, signum):
        """KUBEXIT_SHUTDOWN_ORDER=after-death-deps: keep a terminating signal from CMD
        while a death dep is alive, as native sidecars outlive the main containers. The
        pod is shutting down, so from now on every death of a death dep counts; the hold
        ends when they have died (CMD is stopped as usual), at a second terminating
        signal, or at the shutdown timeout (the signal is forwarded)."""
        if (self.config.shutdown_order != "after-death-deps" or self.held is not None
                or self.killed_by is not None or not self.child.running):
            if self.hold_timer is not None:
                self._stop_holding("a second %s arrived" % signal_name(signum))
            return False
        alive = self.deaths.alive() if self.deaths is not None else []
        if not alive:
            return False
        self.held = signum
        self.hold_timer = self.loop.call_later(self.config.shutdown_timeout, self._hold_over)
        self.log.info("holding %s back from CMD until its death deps have died"
                      % signal_name(signum), alive=",".join(alive),
                      timeout="%gs" % self.config.shutdown_timeout)
        self.deaths.count_every_death()
        return True

    def _hold_over(self):
        self.hold_timer = None
        self.log.info("forwarding the held %s: the shutdown timeout of %gs is over"
                      % (signal_name(self.held), self.config.shutdown_timeout))
        self.child.forward(self.held)

    def _stop_holding(self, why):
        self.hold_timer.cancel()
        self.hold_timer = None
        self.log.info("no longer holding %s back: %s" % (signal_name(self.held), why))

    def _end_without_cmd(self, status, reason, failed=False):
        if self.ending is None:
            self.ending = (status, reason, failed)

    def end_after_a_bug(self):
        """kubexit itself failed: nothing supervises CMD any more, so its whole tree is
        killed now, and Died records EX_SOFTWARE for the siblings."""
        self.child.kill_all()
        return self._end(EXIT_BUG, "kubexit failed (a bug; please report it with the "
                         "traceback above); CMD and what it left were killed", failed=True)

    def _cmd_ended(self):
        """CMD's exit status and the reason line, after the death policy."""
        status = self.child.status
        how = ("was killed by %s" % signal_name(status - 128) if status > 128
               else "exited with status %d" % status)
        if self.killed_by is None:
            return status, "CMD " + how
        name, record = self.killed_by
        return (self._death_status(name, record, status),
                'stopped: death dependency "%s" died%s; CMD %s'
                % (name, with_exit_code(record), how))

    def _death_status(self, name, record, child_status):
        """KUBEXIT_DEATH_EXIT_CODE: a stop that the death dep caused is by default a success."""
        policy = self.config.death_exit_code
        if policy == "zero":
            return 0
        if policy == "child":
            # Never started: what CMD would have died of.
            return 128 + self.config.stop_signal if child_status is None else child_status
        if policy == "dependency":
            if record.died is None:
                return 128 + 9  # its kubexit was killed (its lock fell free) before Died
            code = record.exit_code
            return code if code is not None and 0 <= code <= 255 else 1
        return policy

    def _end(self, status, reason, failed=False):
        """Step 6: say why, record the death, and hand back the exit status. The watches
        close last: closing an inotify fd waits out a kernel grace period (~7 ms), which
        must not delay the `Died` that siblings wait for."""
        if self.config.exit_code_override is not None:
            status = self.config.exit_code_override
            reason += " (exit status %d set by the exit code override)" % status
        (self.log.error if failed else self.log.info)("exiting with status %d: %s"
                                                      % (status, reason))
        write_termination_message(self.config.termination_log, reason, self.log)
        self.record.died = utc_timestamp()
        self.record.exit_code = status
        self._write_tombstone()
        self.liveness.release()
        if self.deaths is not None:
            self.deaths.close()  # its inotify fd and lock waits
        if self.pod is not None:
            self.loop.remove_reader(self.pod.fileno())
            self.pod.close(wait=0)  # kubexit is ending: nothing to wait for
        if self.config.quit_urls:
            self._call_quit_urls()
        return status

    def _call_quit_urls(self):
        """After Died: tell sidecars without kubexit to quit, within QUIT_BUDGET."""
        from kubexit.quit import QuitCalls

        calls = QuitCalls(self.config.quit_urls, self.log, self.loop)
        try:
            self.loop.run_until(lambda: calls.finished)
        finally:
            calls.close()

    def _write_tombstone(self):
        try:
            tombstone.write(self.config.tombstone_path, self.record)
        except OSError as err:
            self.log.error("cannot write tombstone", path=self.config.tombstone_path,
                           error=err.strerror)


class PodStatus:
    """Birth deps in the pod's status (a BirthWatch subscribed to the pod's follower):
    `met`, the deps the status says are ready.

    The API refusing this pod's service account (no token, 401, 403) is one warning
    under KUBEXIT_API=auto, and the graveyard carries on alone (`refusal` says why, for
    the timeout's message); under required, or with KUBEXIT_WATCH_POD (which needs the
    API), it ends the wait with status 1, as does any failure that waiting cannot heal
    (the pod gone) and a dep terminated for good.
    """

    def __init__(self, config, log, follower, end_without_cmd):
        from kubexit.birth import BirthWatch

        self.met = frozenset()
        self.refusal = None
        self._config = config
        self._log = log
        self._follower = follower
        self._end_without_cmd = end_without_cmd
        self._closed = False
        self._watch = BirthWatch(config, log, self._readable)
        follower.subscribe(self._watch)

    def _readable(self):
        if self._closed:
            return
        watch, follower = self._watch, self._follower
        self.met = watch.met
        for name, why in watch.gone.items():
            if name in self._config.death_deps and self._config.watch_pod:
                continue  # the death watch sees the same status: death deps' rules decide
            self._end_without_cmd(1, 'birth dependency "%s" died for good (%s): it will never '
                                  'be ready' % (name, why), failed=True)
        if not follower.finished or follower.failure is None:
            return
        if follower.refused and self._config.api == "auto" and not self._config.watch_pod:
            self.refusal = follower.failure
            self._log.warn("the Kubernetes API refused access, so birth deps are followed in "
                           "the graveyard alone (KUBEXIT_API=required makes this fatal, off "
                           "silences it): " + follower.failure)
            self.close()
        else:
            self._end_without_cmd(1, follower.failure, failed=True)

    def close(self):
        if not self._closed:
            self._closed = True
            self._follower.unsubscribe(self._watch)


def start_collecting():
    """Start-up is over: what it made (modules, ssl, json) is left out of every later
    collection, which would otherwise land on a dep's news (1.5 ms measured)."""
    gc.freeze()
    gc.enable()


def why_not(dep, births, api):
    """Why a birth dep is not ready, for the timeout's message."""
    reasons = [births.why_not(dep)]
    if api is not None:
        reasons.append("the API refused, so the pod's status was not read: " + api.refusal
                       if api.refusal else "not %s in the pod's status"
                       % births.config.birth_condition)
    return "; ".join(reasons)


def with_exit_code(record):
    if record.died is None:
        return " without writing Died (its kubexit was killed)"
    return "" if record.exit_code is None else " with exit code %d" % record.exit_code
