"""The lifecycle of one supervised command, in the order of the contract's section 4.

It wires the parts together and decides; the parts do the work: DeathWatch (the
graveyard), BirthWatch (the Kubernetes API), Child (the process), tombstone (the record)
and EventLoop (all waiting).
"""

import _signal

from kubexit import tombstone
from kubexit.log import utc_timestamp
from kubexit.loop import EventLoop
from kubexit.process import Child, SpawnError, signal_name

# Signals that end the wait for birth deps, before CMD exists to receive them.
TERMINATING = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT)


class Lifecycle:
    def __init__(self, config, log, argv):
        self.config = config
        self.log = log
        self.loop = EventLoop()
        self.child = Child(argv, log)
        self.record = tombstone.Tombstone()
        self.ending = None      # (status, reason) once kubexit must end without CMD
        self.killed_by = None   # (dep name, its tombstone) once a death dep has died

    def run(self):
        """Steps 2 to 6; step 1 (validation) happened when the Config was built."""
        self.loop.catch_signals(self._on_signal)
        if self.config.death_deps:
            self._watch_death_deps()
        if self.ending is None and self.config.birth_deps:
            self._wait_for_birth_deps()
        if self.ending is not None:
            status, reason = self.ending
            self.log.info("not starting CMD: " + reason)
            return self._record_death(status)
        try:
            pid = self.child.spawn()
        except SpawnError as err:
            self.log.error(str(err))
            return self._record_death(err.status)
        self.log.info("started CMD", pid=pid, cmd=self.child.argv[0])
        self.record.born = utc_timestamp()
        self._write_tombstone()
        self.loop.run_until(lambda: not self.child.running)
        return self._record_death(self._exit_status())

    def _watch_death_deps(self):
        from kubexit.watch import DeathWatch

        self.deaths = DeathWatch(self.config, self.log, self.loop, self._on_death)
        self.deaths.start()
        self.log.debug("watching death deps", deps=",".join(self.config.death_deps),
                       mode=self.deaths.watcher.kind)

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
                self._end_without_cmd(1, str(err))

        def timed_out():
            self._end_without_cmd(1, "birth deps %s not %s after %gs" % (
                deps, self.config.birth_condition, self.config.birth_timeout))

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
        self.killed_by = (name, record)
        self.log.info("death dep died", dep=name, exit_code=record.exit_code)
        if self.child.running:
            self.child.stop(self.loop, _signal.SIGTERM, self.config.grace_period)
        else:
            self._end_without_cmd(self._death_status(None), "death dep %s has died" % name)

    def _on_signal(self, signum):
        if signum == _signal.SIGCHLD:
            self.child.reap()
        elif self.child.running:
            self.log.debug("forwarding signal", signal=signal_name(signum))
            self.child.send(signum)
        elif self.ending is None and signum in TERMINATING:
            self._end_without_cmd(128 + signum, "received " + signal_name(signum))
        else:
            self.log.debug("ignoring signal", signal=signal_name(signum))

    def _end_without_cmd(self, status, reason):
        if self.ending is None:
            self.ending = (status, reason)

    def _exit_status(self):
        status = self.child.status
        if self.killed_by is not None:
            return self._death_status(status)
        return status

    def _death_status(self, child_status):
        """Exit status when a death dep ended things (issue 4 makes this a policy)."""
        return 0 if child_status is None else child_status

    def _record_death(self, status):
        self.log.info("exiting", status=status)
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
