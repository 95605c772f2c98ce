"""The lifecycle of one supervised command, in the order of the contract's section 4.

It wires the parts together and decides; the parts do the work: DeathWatch (the
graveyard), BirthWatch (the Kubernetes API), Child (the process tree), tombstone (the
record) and EventLoop (all waiting).
"""

import _signal

from kubexit import tombstone
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

# Only a terminal sends these, to kubexit itself: never forward them when it has one.
TERMINAL_STOPS = (_signal.SIGTTIN, _signal.SIGTTOU)


class Lifecycle:
    def __init__(self, config, log, argv):
        self.config = config
        self.log = log
        self.loop = EventLoop()
        self.child = Child(argv, log, config.signal_group)
        self.record = tombstone.Tombstone()
        self.ending = None      # (status, reason, failed) once kubexit must end without CMD
        self.killed_by = None   # (dep name, its tombstone) once a death dep stopped CMD

    def run(self):
        """Steps 2 to 6; step 1 (validation) happened when the Config was built."""
        take_terminal = self.config.signal_group and owns_foreground_terminal()
        self.loop.catch_signals(self._on_signal, TERMINAL_STOPS if take_terminal else ())
        if not become_subreaper():
            self.log.warn("cannot become a child subreaper: processes that leave CMD's "
                          "process group may outlive it")
        if self.config.death_deps:
            self._watch_death_deps()
        if self.ending is None and self.config.birth_deps:
            self._wait_for_birth_deps()
        if self.ending is not None:
            return self._end(*self.ending)
        try:
            pid = self.child.spawn(take_terminal)
        except SpawnError as err:
            return self._end(err.status, str(err), failed=True)
        self.log.info("started CMD", pid=pid, cmd=self.child.argv[0])
        self.record.born = utc_timestamp()
        self._write_tombstone()
        self.loop.run_until(lambda: not self.child.running)
        status, reason = self._cmd_ended()
        if not self.child.alone:
            self.child.stop_leftovers(self.loop, self.config.grace_period)
            self.loop.run_until(lambda: self.child.alone)
        return self._end(status, reason)

    def _watch_death_deps(self):
        from kubexit.watch import DeathWatch

        self.deaths = DeathWatch(self.config, self.log, self.loop, self._on_death)
        self.deaths.start()
        self.log.debug("watching death deps", deps=",".join(self.config.death_deps),
                       mode=self.deaths.watcher.kind, policy=self.config.death_policy)

    def _wait_for_birth_deps(self):
        from kubexit.birth import BirthDepsFailed, BirthWatch

        deps = ",".join(self.config.birth_deps)
        self.log.info("waiting for birth deps", deps=deps, condition=self.config.birth_condition)
        births = BirthWatch(self.config, self.log)
        ready = []

        def readable():
            try:
                if births.poll():
                    ready.append(True)
            except BirthDepsFailed as err:
                self._end_without_cmd(1, str(err), failed=True)

        def timed_out():
            self._end_without_cmd(1, "birth deps %s not %s after %gs" % (
                deps, self.config.birth_condition, self.config.birth_timeout), failed=True)

        self.loop.add_reader(births.fileno(), readable)
        timer = self.loop.call_later(self.config.birth_timeout, timed_out)
        try:
            self.loop.run_until(lambda: ready or self.ending is not None)
        finally:
            timer.cancel()
            self.loop.remove_reader(births.fileno())
            births.close()
        if ready:
            self.log.info("birth deps are " + self.config.birth_condition, deps=deps)

    def _on_death(self, name, record):
        if self.child.running:
            self.killed_by = (name, record)
            self.child.stop(self.loop, self.config.stop_signal, self.config.grace_period)
        elif self.child.pid is None:
            self._end_without_cmd(self._death_status(name, record, None),
                                  'not started: death dependency "%s" had died%s'
                                  % (name, with_exit_code(record)))

    def _on_signal(self, signum):
        if signum == _signal.SIGCHLD:
            self.child.reap()
        elif self.child.pid is not None:
            self.log.debug("forwarding signal", signal=signal_name(signum))
            self.child.forward(signum)
        elif signum in TERMINATING:
            self._end_without_cmd(128 + signum, "received %s before CMD started"
                                  % signal_name(signum))
        else:
            self.log.debug("ignoring signal", signal=signal_name(signum))

    def _end_without_cmd(self, status, reason, failed=False):
        if self.ending is None:
            self.ending = (status, reason, failed)

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
            code = record.exit_code
            return code if code is not None and 0 <= code <= 255 else 1
        return policy

    def _end(self, status, reason, failed=False):
        """Step 6: say why, record the death, and hand back the exit status."""
        if self.config.exit_code_override is not None:
            status = self.config.exit_code_override
            reason += " (exit status %d set by the exit code override)" % status
        (self.log.error if failed else self.log.info)("exiting with status %d: %s"
                                                      % (status, reason))
        write_termination_message(self.config.termination_log, reason, self.log)
        self.record.died = utc_timestamp()
        self.record.exit_code = status
        self._write_tombstone()
        return status

    def _write_tombstone(self):
        try:
            tombstone.write(self.config.tombstone_path, self.record)
        except OSError as err:
            self.log.error("cannot write tombstone", path=self.config.tombstone_path,
                           error=err.strerror)


def with_exit_code(record):
    return "" if record.exit_code is None else " with exit code %d" % record.exit_code
