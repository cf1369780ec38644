"""A first compile on two cores: while this process compiles a fused epoch, a second Python
process (the helper) compiles the kernels that epoch calls into the same on-disk cache, from
which this process then loads them. Numba compiles one function at a time per process (a global
lock, and the GIL), and about half a first fit's seconds are the kernels an epoch calls: by
address (``_nb_common``'s ``.at``: the activations, the output deltas, a layer's update with the
optimiser's rule, the deltas of a layer below) and by symbol (``separately``: the blocked
products, the batch gather).

The helper learns what to compile while this process types the epoch: each ``.at`` call site,
once typed, is a job (``_nb_common._Load``: the kernel, its argument types, the plan's codes for
that slot), and so is each call of a ``separately`` kernel with a declared return type, which is
then typed without being compiled (``_nb_common.DEFER``) and obtained just before the epoch's
code is linked; once the epoch is compiled, so are the calls by address of the kernels it loaded
rather than typed (``_nb_common.slots_below``). The helper asks for the jobs one at a time, the newest first (the biggest, a
layer's update, is typed last); this process takes back the ones it needs before linking and,
once the epoch is compiled, the oldest of the rest, then waits for the helper's last job, so the
two finish together. Whatever the helper did not finish (it failed, hung, was slow to start, or
its cache is not this process's) is compiled here as before: the helper only ever saves time,
and the code either process runs is Numba's cached code, keyed as always.

A helper is started only for a compile (an epoch neither loaded in this process nor in the
cache), with at least two CPUs to run on (affinity and cgroup quota), a Python to run it with
(not from a frozen program) and a cache on disk to share; ``FASTBP_COMPILE_AHEAD=0`` turns it off,
``fastbp info`` says which. It is a ``python -I -c`` child given this process's ``sys.path`` and
environment (and Numba's cache folder, when set in code); it answers on its own copy of stdout,
and is killed once it has no job left.
"""
from __future__ import annotations

import collections
import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading

from numba.core import caching

from . import _nb_common as KC

ENV = "FASTBP_COMPILE_AHEAD"  # "0": never start a helper
_IN_HELPER = "FASTBP_COMPILE_AHEAD_HELPER"  # set in the helper's environment (it starts none)
PATIENCE = 30.0  # seconds this process waits for a job the helper runs before compiling it too (one takes 0.2-2 s)
SETTLE = 0.02  # seconds without a new job before the helper takes one
LAST = {}  # the last first compile's jobs by who compiled them: "helper", "here" (names; for tests, benchmarks)

CHILD = r"""
import os, pickle, signal, struct, sys
if hasattr(signal, "pthread_sigmask"):  # (started by a thread that blocks SIGINT: Ctrl-C ends it as any child)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
answers = os.fdopen(os.dup(1), "w")  # the protocol's own copy of stdout; whatever else prints goes to stderr
os.dup2(2, 1)
def read():
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        return None
    return pickle.loads(sys.stdin.buffer.read(struct.unpack("<I", head)[0]))
sys.path[:] = read()
import importlib
importlib.import_module(read()).serve(read, answers, read())
"""
ASK = b"next\n"  # the helper's only line: its last job is done, the next please


def _cpus(cgroup="/sys/fs/cgroup"):
    """The CPUs this process may use: those it may run on, and no more than its cgroup's CPU quota
    (a container started with ``--cpus=1`` sees every CPU of the host but gets the time of one)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return n if quota is None else max(1, min(n, int(quota)))


def _cgroup_quota(root):
    """The cgroup's CPU quota in CPUs (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``), None when there is none or no cgroup to read."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        try:
            with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
                quota = f.read().strip()
            with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
                period = f.read().strip()
        except OSError:
            return None
    try:
        quota, period = float(quota), float(period)
    except ValueError:  # ("max": no quota)
        return None
    return quota / period if quota > 0 and period > 0 else None


def interpreter():
    """The Python to run the helper with (multiprocessing's: ``sys.executable``, or what the host
    program set), or None: a frozen program (``sys.frozen``: its executable runs the program, not
    ``-c``) or an executable that is not a Python (an embedding program's own binary)."""
    if getattr(sys, "frozen", False):
        return None
    from multiprocessing import spawn
    exe = spawn.get_executable()
    if isinstance(exe, bytes):
        exe = os.fsdecode(exe)
    if not exe or not os.path.basename(exe).lower().startswith(("python", "pypy")):
        return None
    return exe


def _why_not():
    """Why this process starts no helper (None: it may, for a compile that needs one)."""
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0"
    if os.environ.get(_IN_HELPER):
        return "it is a helper"
    if _cpus() < 2:
        return "one CPU"
    if interpreter() is None:
        return "no Python to run a helper with"
    return None


def status():
    """Whether a first compile here would have a helper, in words (``fastbp info``)."""
    why = _why_not()
    if why is not None:
        return f"in this process only ({why})"
    return f"shared with a helper process ({_cpus()} CPUs; {ENV}=0 turns it off)"


def _cache_path(dispatcher):
    """The folder of a kernel's cache (None: it has none on disk)."""
    cache = getattr(dispatcher, "_cache", None)
    return cache._cache_path if isinstance(cache, caching.Cache) else None


def wanted(dispatcher, argtypes):
    """Whether a helper would pay for the compile of ``dispatcher`` for ``argtypes``: it is not
    compiled or loaded in this process, not in the disk cache, the cache is on disk (the helper's
    work reaches this process through it), two CPUs or more, a Python to run it (``interpreter``),
    not turned off, not in a helper."""
    if _why_not() is not None or tuple(argtypes) in dispatcher.overloads:
        return False
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, caching.Cache):
        return False
    try:
        key = cache._index_key(tuple(argtypes), dispatcher.targetctx.codegen())
        return key not in cache._cache_file._load_index()
    except Exception:  # (a cache this code cannot read: Numba will compile, without a helper)
        return False


class Ahead:
    """One first compile's helper and its jobs (``_nb_common._Load``: a kernel, its argument types,
    its codes): ``add``/``add_slot`` as the epoch is typed (``_nb_common.DEFER``), ``obtain`` where this process needs one
    compiled, ``finish`` once the epoch is compiled."""

    def __init__(self, values_of, cache_path):
        self.values_of = values_of  # slot -> the plan's codes for it (None: never called)
        self.cache_path = cache_path  # the kernels' cache folder here (the helper checks it has the same)
        self.jobs = collections.deque()  # not yet taken
        self.seen = set()
        self.running = None  # the helper's job
        self.done = set()  # the helper's finished jobs
        self.here = []  # the jobs this process took back and compiled
        self.idle = threading.Event()  # the helper takes no more jobs (told so, or gone)
        self.server = None  # the thread that answers it
        self.closed = False
        self.cond = threading.Condition()
        env = dict(os.environ, **{_IN_HELPER: "1"})
        from numba.core import config
        if config.CACHE_DIR:
            env["NUMBA_CACHE_DIR"] = config.CACHE_DIR
        self.proc = None
        try:  # (-I: nothing from the working folder or PYTHON* variables; it is sent this sys.path)
            self.proc = subprocess.Popen([interpreter(), "-I", "-c", CHILD], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            self.server = threading.Thread(target=self._serve, name="fastbp-compile-ahead", daemon=True)
            self.server.start()
        except (OSError, ValueError, TypeError, RuntimeError):  # (no interpreter, or no thread: all compiled here)
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
                self._close()
            self.proc = self.server = None
            self.idle.set()

    def add(self, job):
        """A job the helper may take (or this process, in ``obtain`` or ``finish``)."""
        with self.cond:
            if job not in self.seen:
                self.seen.add(job)
                self.jobs.append(job)
                self.cond.notify_all()

    def add_slot(self, module, name, argtypes, slot):
        """A slot's call site was typed: the kernel for the plan's codes is a job (unless this
        process has it already)."""
        codes = self.values_of(slot)
        if codes is not None:
            job = KC._Load(module, name, argtypes, tuple(sorted(codes.items())))
            if argtypes not in job.separate().variant(job.values).symbols:
                self.add(job)

    def add_slots(self, slots):
        """``add_slot`` for each of the calls by address (``_nb_common._Slot``) of the kernels the
        compiled epoch calls by symbol (typed in their compile, maybe the helper's, not here)."""
        for hook in slots:
            self.add_slot(hook.module, hook.name, hook.argtypes, hook.index)

    def obtain(self, job):
        """Have ``job``'s kernel here: taken back from the queue and compiled here, or waited for
        while the helper compiles it, then loaded (``job()``: from the cache when the helper
        finished it)."""
        with self.cond:
            if job in self.jobs:
                self.jobs.remove(job)
                self.here.append(job)
            elif self.running == job:
                self.cond.wait_for(lambda: self.running != job or self.idle.is_set(), PATIENCE)
        job()

    def finish(self, rest=True):
        """The epoch is compiled: no more jobs; compile the oldest here while the helper takes
        the newest, then wait for its last one (it is then in the cache). ``rest=False`` (the
        epoch's compile failed): neither, the helper is stopped."""
        with self.cond:
            self.closed = True
            if not rest:
                self.jobs.clear()
            self.cond.notify_all()
        while True:
            with self.cond:
                if not self.jobs:
                    break
                job = self.jobs.popleft()
                self.here.append(job)
            try:
                job()
            except Exception:
                pass  # (compiled again, and its error raised, where the caller asks for it)
        with self.cond:
            helping = self.running is not None
        if helping:  # (its last job: not killed halfway, which leaves temporary files in the cache)
            self.idle.wait(PATIENCE)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # (done, idle, or past patience: what it did not finish was compiled here)
            self.server.join()  # (at once: its helper is gone)
        LAST.clear()
        LAST.update(helper=sorted(j.name for j in self.done), here=sorted(j.name for j in self.here))

    def _next(self):
        """The helper's next job: the newest, once the calls typed together have all come (an
        epoch's are typed within milliseconds, the biggest kernel, a layer's update, last)."""
        with self.cond:
            while not self.jobs and not self.closed:
                self.cond.wait()
            count = -1
            while count != len(self.jobs) and not self.closed:
                count = len(self.jobs)
                self.cond.wait(SETTLE)
            self.running = self.jobs.pop() if self.jobs else None
            return self.running

    def _serve(self):
        """Answer the helper: each line it writes says its last job is done and asks for the next.
        Then let it go (it exits when its input ends)."""
        try:
            for first in (list(sys.path), __name__, self.cache_path):  # where to import from, this module
                data = pickle.dumps(first)
                self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
            while self.proc.stdout.readline() == ASK:  # (anything else: not our helper, or gone)
                with self.cond:
                    if self.running is not None:
                        self.done.add(self.running)
                    self.running = None
                    self.cond.notify_all()
                job = self._next()
                if job is None:
                    break
                data = pickle.dumps(job)
                self.proc.stdin.write(struct.pack("<I", len(data)) + data)
                self.proc.stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.running = None
                self.idle.set()
                self.cond.notify_all()
            try:
                self.proc.stdin.close()  # (it exits at the end of its input)
            except OSError:
                pass
            try:
                self.proc.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._close()

    def _close(self):
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def serve(read, answers, cache_path):
    """The helper's loop: ask for a job (a line on ``answers``), compile it (``_nb_common._Load``:
    into the cache), again until told there is none. Not when its kernels' cache folder is not the
    parent's ``cache_path`` (Numba's cache folder set in the parent's code after the kernels were
    made, say): its work would not reach the parent. First, while the parent types its epoch,
    Numba's first compile (a trivial function, not cached): it loads the typing and lowering
    registries, a fixed half second that the first job would otherwise pay."""
    if _cache_path(importlib.import_module(__name__.rsplit(".", 1)[0] + "._nb_epoch").train_epoch) != cache_path:
        return
    from numba import njit
    njit(lambda x: x + 1)(1)
    while True:
        answers.write(ASK.decode())
        answers.flush()
        job = read()
        if job is None:
            return
        try:
            job()
        except Exception:
            pass  # (the parent compiles what is not in the cache, and reports its errors)
