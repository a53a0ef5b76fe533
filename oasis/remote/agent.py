#!/usr/bin/env python3
"""oasis-agent: the one script oasis installs on every host. Standard library only, any Python 3.8+.

It keeps processes alive independently of the controller: daemons (framework processes) and jobs run in
their own sessions, record their pid, and a job's supervisor records its exit code. Every command is
idempotent, so an engine that died half-way can simply run it again.

  start DIR NAME [--env K=V ...] [--ready PATTERN [--fail PATTERN ...] --timeout S] -- ARGV...
                                              start a daemon unless it is already running (log in DIR/NAME.log);
                                              with --ready, return once PATTERN is in its log, and fail at once
                                              when the daemon exits or a --fail PATTERN is in its log
  stop DIR NAME [--grace S]                   stop a daemon's whole process group
  stop-all DIR [--grace S]                    stop every daemon recorded in DIR
  wait-log DIR NAME PATTERN TIMEOUT [--fail PATTERN ...]
                                              wait for PATTERN in DIR/NAME.log (fails if the daemon exits or a
                                              --fail PATTERN shows first)
  run DIR [--env K=V ...] -- ARGV...          launch a job once; stdout, stderr, pid and result live in DIR
  wait DIR TIMEOUT [--from OUT ERR] [--max N] wait up to TIMEOUT s for a job's end; prints a JSON status. With
                                              --from, also return soon after stdout or stderr grew beyond those
                                              offsets, with "logs": {stream: {"from", "data" (base64, at most N
                                              bytes), "size"}}
  cancel DIR [--grace S]                      stop a job's whole process tree
  signal DIR SIG                              send SIG (STOP or CONT) to a job's whole process group; prints
                                              JSON {"running": bool} (false: the job has ended or never ran)
  busy-ports ADDRESS PORT...                  print (JSON) which of these ports something already listens on
  authorize FILE KEYLINE                      add an SSH public key line to an authorized_keys file, once
  unauthorize FILE MARK                       remove the key lines that contain MARK
  prepare DIR USER KEY                        make an instance's directory (and DIR/proc), mode 0700, owned by
                                              USER, a Unix user of the cluster's project (created on its first
                                              instance of this machine); prints JSON {"name","uid","gid"}, or
                                              null where the agent cannot switch users (not root)
  release DIR USER KEY                        remove an instance's directory and its reference to USER; the
                                              user (and any process of it) goes with its last reference
  volumes-up BACKEND WHERE KEY SIZE_GB DIR USER MOUNT...
                                              give instance KEY one volume of SIZE_GB GB per MOUNT (a path inside
                                              its directory DIR), named oasis-KEY-N (N from 1), ext4, mounted
                                              there, its root owned by USER, mode 0700; makes only what is missing;
                                              prints JSON [{"name", "device", "mount"}]. BACKEND `loop`: WHERE is
                                              the directory of the volumes' image files
  volumes-down BACKEND WHERE KEY              unmount, detach and remove every volume named oasis-KEY-*, however
                                              many there are (a removal that died half-way finds the rest)

  provision                                   one instance's prepare, ports check and volumes in one call, its
                                              spec (JSON) on stdin; prints JSON {"owner", "busy", "volumes",
                                              "done"} (see cmd_provision)
  is-dir DIR                                  fail unless DIR is a directory
  serve                                       answer framed requests on stdin, each a command above run in a
                                              forked child of this process, many at once, until stdin closes
                                              (one long-lived session per host: no interpreter start and no SSH
                                              channel per call); see cmd_serve

Options before any other argument of start, stop, stop-all, wait, run, cancel and signal:
  --user NAME --home DIR                      act as NAME (a user made by `prepare`), with HOME=DIR: daemons and
                                              jobs run as that user, and can only be stopped, signalled or read
                                              with its rights (a pid file it rewrote cannot aim the agent at
                                              anyone else's process)
"""
import base64
import fcntl
import io
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

POLL = 0.05
# A daemon's log is read this often while its start is waited for: each start is on the path to a cluster's
# Active (a scheduler, then its workers), and 50 ms cost 25 ms on average each time; a read of a short log is cheap.
READY_POLL = 0.01
RESULT_GRACE = 10.0  # seconds a job's supervisor has to write its result once the job's process has ended
LOG_COALESCE = 0.2  # `wait --from` answers this long after a log grew: a burst of lines comes as one piece
LOG_MAX = 1 << 20  # bytes of each stream one `wait --from` answers at most; the rest comes with the next
# Machine-wide, not under a host's base directory: the lab's hosts are namespaces of one machine that share one
# /etc/passwd, so a project user is shared by every host of the machine and counted here across all of them.
USERS_DIR = "/var/lib/oasis-agent/users"
USER_NAME = re.compile(r"oasis-[a-z0-9]{1,26}\Z")  # only users oasis makes: never root or a person's account
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _write_atomic(path, text, mode=0o644):
    # A temporary name of this call's own (two writers of one path never touch each other's file), created
    # with the final mode, then renamed over the path: readers see the old content or the new, never a part.
    tmp = "%s.%d.%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _locked(path):
    """An exclusive lock held as long as the returned file is open (closed on exec: a daemon never holds it)."""
    lock = open(path, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _split(args, options=(), repeated=()):
    """(env, {option: value}, argv) from `[--env K=V ...] [--option value ...] -- argv...`; an option in
    `repeated` may be given many times and its value is the list of them."""
    env, opts, i = {}, {k: [] for k in repeated}, 0
    while i < len(args) and args[i] != "--":
        if args[i] == "--env":
            k, _, v = args[i + 1].partition("=")
            env[k] = v
        elif args[i].lstrip("-") in repeated:
            opts[args[i].lstrip("-")].append(args[i + 1])
        elif args[i].lstrip("-") in options:
            opts[args[i].lstrip("-")] = args[i + 1]
        else:
            raise SystemExit("unexpected argument: %s" % args[i])
        i += 2
    return env, opts, args[i + 1:]


def _spawn(argv, env, stdout, stderr, cwd):
    """Fork a child in a new session running argv; returns its pid. The child's group is its own pid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.chdir(cwd)
            fd_in = os.open(os.devnull, os.O_RDONLY)
            os.dup2(fd_in, 0)
            os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 1)
            os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2)
            os.execvpe(argv[0], argv, dict(os.environ, **env))
        except BaseException as e:  # noqa: BLE001 - report anything and never return into the parent's code
            os.write(2, ("oasis-agent: cannot start %r: %s\n" % (argv, e)).encode())
        os._exit(127)
    return pid


def _group_alive(pgid):
    """Whether a process of the group still runs. Zombies do not count: they have ended and only wait for their
    parent (init, for a daemon) to reap them, which some inits do seconds later."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    seen = False
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid:
            if state != "Z":
                return True
            seen = True
    return not seen  # the group exists but /proc shows none of it (not this PID namespace's /proc): trust killpg


def _kill_group(pid, grace):
    """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
            if sig == signal.SIGTERM:  # a stopped (suspended) group only acts on SIGTERM once continued
                os.killpg(pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        except PermissionError:  # none of the group is this user's (a pid file that points elsewhere): not ours
            return
        deadline = time.time() + (grace if sig == signal.SIGTERM else 5)
        while time.time() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(POLL)


def _grace(args, default=10.0):
    return float(args[args.index("--grace") + 1]) if "--grace" in args else default


def cmd_start(d, name, *rest):
    env, opts, argv = _split(list(rest), ("ready", "timeout"), ("fail",))
    os.makedirs(d, exist_ok=True)
    pidfile, log = os.path.join(d, name + ".pid"), os.path.join(d, name + ".log")
    since = 0
    # Check, spawn and record under one lock: two callers at once (two engines, one taking over) would
    # otherwise both see no daemon and start two.
    with _locked(os.path.join(d, name + ".lock")):
        pid = _read_pid(pidfile)
        if not (pid and _alive(pid)):
            # a new daemon is judged by what it writes, not by what an earlier one left in the log
            since = os.path.getsize(log) if os.path.exists(log) else 0
            pid = _spawn(argv, env, log, log, d)
            _write_atomic(pidfile, str(pid))
    print(pid)
    sys.stdout.flush()
    if "ready" in opts:  # one call instead of two: each costs a Python start on the host
        return _wait_log(d, name, opts["ready"], opts.get("timeout", "120"), opts["fail"], since)
    return 0


def cmd_stop(d, name, *rest):
    pidfile = os.path.join(d, name + ".pid")
    with _locked(os.path.join(d, name + ".lock")):  # a start at the same time waits, then starts afresh
        pid = _read_pid(pidfile)
        if pid:
            _kill_group(pid, _grace(rest))
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
    return 0


def cmd_stop_all(d, *rest):
    if os.path.isdir(d):
        for f in sorted(os.listdir(d)):
            if f.endswith(".pid"):
                cmd_stop(d, f[:-4], *rest)
    return 0


def cmd_wait_log(d, name, pattern, timeout, *rest):
    _, opts, _ = _split(list(rest) + ["--"], (), ("fail",))
    return _wait_log(d, name, pattern, timeout, opts["fail"])


def _lines_with(buf, patterns):
    return [line for line in buf.splitlines() if any(p in line for p in patterns)] if patterns else []


def _wait_log(d, name, pattern, timeout, fail=(), pos=0):
    log, pidfile = os.path.join(d, name + ".log"), os.path.join(d, name + ".pid")
    deadline = time.time() + float(timeout)
    buf = ""
    while True:
        pid = _read_pid(pidfile)
        gone = not pid or not _alive(pid)  # looked at before the read: a dead daemon's last words are in it
        try:
            with open(log, "rb") as f:
                f.seek(pos)
                chunk = f.read().decode(errors="replace")
                pos = f.tell()
        except FileNotFoundError:
            chunk = ""
        buf = (buf + chunk)[-65536:]
        # A failure first: a daemon may log that it could not bind and go on (Spark), or bind elsewhere and
        # then say it is ready (Dask); either way it is not the daemon that was asked for.
        failed = _lines_with(buf, fail)
        if failed:
            sys.stderr.write("%s failed to start: %s\nlast log lines:\n%s\n"
                             % (name, "\n".join(failed[:3])[:1500], buf[-3000:]))
            return 5
        if pattern in buf:
            return 0
        if gone:
            sys.stderr.write("%s exited before it was ready; last log lines:\n%s\n" % (name, buf[-3000:]))
            return 3
        if time.time() > deadline:
            sys.stderr.write("%s not ready after %ss; last log lines:\n%s\n" % (name, timeout, buf[-3000:]))
            return 4
        time.sleep(READY_POLL)


def cmd_run(d, *rest):
    env, _, argv = _split(list(rest))
    os.makedirs(d, exist_ok=True)
    # Two launches at once (two engines) must start the job once: the check and the launch hold one lock,
    # released when this call returns (the supervisor closes its inherited copy at once).
    lock = _locked(os.path.join(d, "launch.lock"))
    pidfile = os.path.join(d, "pid")
    if os.path.exists(pidfile) or os.path.exists(os.path.join(d, "result")):
        print(_read_pid(pidfile) or 0)
        return 0
    # The supervisor waits for the job and records its exit code; it is the job's session leader so that
    # nothing here depends on the caller (ssh session or engine) staying alive.
    r, w = os.pipe()
    sup = os.fork()
    if sup == 0:
        os.close(r)
        lock.close()  # a forked copy of the lock's file would hold the lock for as long as the job runs
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        started = time.time()
        child = os.fork()
        if child == 0:
            os.setpgid(0, 0)
            os.chdir(d)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(os.path.join(d, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 1)
            os.dup2(os.open(os.path.join(d, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2)
            try:
                os.execvpe(argv[0], argv, dict(os.environ, **env))
            except BaseException as e:  # noqa: BLE001
                os.write(2, ("oasis-agent: cannot start %r: %s\n" % (argv, e)).encode())
            os._exit(127)
        _write_atomic(pidfile, str(child))
        os.write(w, str(child).encode())
        os.close(w)
        for fd in (0, 1, 2):
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
        _, status = os.waitpid(child, 0)
        rc = os.waitstatus_to_exitcode(status)
        _write_atomic(os.path.join(d, "result"), json.dumps(
            {"rc": rc, "started": started, "ended": time.time(),
             "cancelled": os.path.exists(os.path.join(d, "cancelled"))}))
        os._exit(0)
    os.close(w)
    os.waitpid(sup, 0)
    pid = os.read(r, 32).decode() or "0"
    lock.close()
    print(pid)
    return 0


def _status(d):
    try:
        with open(os.path.join(d, "result")) as f:
            return dict(json.load(f), done=True)
    except (OSError, ValueError):
        pass
    pid = _read_pid(os.path.join(d, "pid"))
    if pid and _alive(pid):
        return {"done": False, "pid": pid}
    # The supervisor may be reaping the job and writing the result right now: on a loaded host (a load of 20 on
    # two cores is enough) that takes well over a fraction of a second, and a job that ended well would be lost.
    # A job that never started (no pid) has no supervisor to wait for.
    deadline = time.time() + (RESULT_GRACE if pid else 0.2)
    while True:
        try:
            with open(os.path.join(d, "result")) as f:
                return dict(json.load(f), done=True)
        except (OSError, ValueError):
            if time.time() > deadline:
                return {"done": True, "rc": None, "lost": True}
        time.sleep(POLL)


def _log_piece(d, stream, offset, limit):
    """Up to `limit` bytes of the job's `stream` file from `offset` (base64: the answer is JSON), and the
    file's size, which says whether more is left for the next call."""
    try:
        with open(os.path.join(d, stream), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit) if size > offset else b""
    except FileNotFoundError:
        size, data = 0, b""
    return {"from": offset, "data": base64.b64encode(data).decode(), "size": max(size, offset + len(data))}


def _size(d, stream):
    try:
        return os.stat(os.path.join(d, stream)).st_size
    except OSError:
        return 0


def cmd_wait(d, timeout, *rest):
    """With `--from OUT ERR`, also return once stdout or stderr has grown beyond those offsets (after a short
    pause that gathers a burst of lines into one answer), with the new bytes: a follower is a fraction of a
    second behind, and each call costs what is new, never the whole log. A stat of two files every POLL is
    all the waiting costs."""
    offsets, limit, i = None, LOG_MAX, 0
    while i < len(rest):
        if rest[i] == "--from":
            offsets = {"stdout": int(rest[i + 1]), "stderr": int(rest[i + 2])}
            i += 3
        elif rest[i] == "--max":
            limit = int(rest[i + 1])
            i += 2
        else:
            raise SystemExit("unexpected argument: %s" % rest[i])
    deadline = time.time() + float(timeout)
    parent = os.getppid()
    grown = None
    while True:
        st = _status(d)
        now = time.time()
        if grown is None and offsets is not None and any(_size(d, s) > o for s, o in offsets.items()):
            grown = now
        if (st["done"] or now > deadline or os.getppid() != parent
                or (grown is not None and now - grown >= LOG_COALESCE)):
            if offsets is not None:
                st["logs"] = {s: _log_piece(d, s, o, limit) for s, o in offsets.items()}
            print(json.dumps(st))
            return 0
        time.sleep(POLL)


def cmd_cancel(d, *rest):
    open(os.path.join(d, "cancelled"), "a").close()
    pid = _read_pid(os.path.join(d, "pid"))
    if pid:
        _kill_group(pid, _grace(rest, 5.0))
    return 0


SIGNALS = {"STOP": signal.SIGSTOP, "CONT": signal.SIGCONT}


def cmd_signal(d, sig):
    """Suspend (STOP) or resume (CONT) a job: its process group is the job's own (see cmd_run), so every
    process the job started stops with it, while the supervisor keeps waiting for it."""
    if sig not in SIGNALS:
        sys.stderr.write("unknown signal %s (STOP or CONT)\n" % sig)
        return 2
    pid = _read_pid(os.path.join(d, "pid"))
    running = bool(pid) and not os.path.exists(os.path.join(d, "result")) and _alive(pid)
    if running:
        try:
            os.killpg(pid, SIGNALS[sig])
        except ProcessLookupError:
            running = False
    print(json.dumps({"running": running}))
    return 0


def cmd_busy_ports(address, *ports):
    print(json.dumps(_busy_ports(address, ports)))
    return 0


def _busy_ports(address, ports):
    busy = []
    for port in ports:
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        try:
            s.bind((address, int(port)))
        except OSError:
            busy.append(int(port))
        finally:
            s.close()
    return busy


def _edit_keys(path, edit):
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _locked(path + ".lock"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        new = edit(lines)
        if new != lines:
            _write_atomic(path, "".join(line + "\n" for line in new), 0o600)
            os.chmod(path, 0o600)  # the umask may have taken bits off; sshd wants exactly this
    return 0


def cmd_authorize(path, keyline):
    return _edit_keys(path, lambda lines: lines if keyline in lines else lines + [keyline])


def cmd_unauthorize(path, mark):
    return _edit_keys(path, lambda lines: [line for line in lines if mark not in line])


# --- project users ------------------------------------------------------------------------------------------


def _check_user(name):
    if not USER_NAME.match(name):
        raise SystemExit("not a project user name: %r" % name)


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _users_lock():
    os.makedirs(USERS_DIR, mode=0o700, exist_ok=True)
    return _locked(os.path.join(os.path.dirname(USERS_DIR), "users.lock"))


def _ensure_user(name):
    pw = _user(name)
    if pw is None:
        # A system user of its own group, with no home and no login: only the agent starts its processes.
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, stdout=subprocess.DEVNULL)
        pw = pwd.getpwnam(name)
    return pw


def _uid_processes(uid):
    """Pids of the live (not zombie) processes whose real uid is `uid`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            out.append(int(pid))
    return out


def _kill_user(uid, gid):
    """SIGKILL every process of `uid`, from a child that has become `uid`: kill(-1) then reaches exactly the
    processes that user may signal, its own, and the kernel rather than this code decides which they are."""
    deadline = time.time() + 10
    while _uid_processes(uid) and time.time() < deadline:
        child = os.fork()
        if child == 0:
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except BaseException:  # noqa: BLE001 - nothing left to kill is fine
                pass
            os._exit(0)
        os.waitpid(child, 0)
        time.sleep(POLL)


def _delete_user(pw):
    _kill_user(pw.pw_uid, pw.pw_gid)
    for _ in range(50):  # a process that has just been killed may still be on its way out
        rc = subprocess.run(["userdel", pw.pw_name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
        if rc in (0, 6):  # 6: no such user (gone meanwhile)
            return
        time.sleep(0.1)
    subprocess.run(["userdel", "--force", pw.pw_name], check=True, stdout=subprocess.DEVNULL)


def _traversable_parents(path):
    """Make the instance's parents (the cluster's directory, the host's base directory) 0711 where this agent owns
    them: a project user can pass through to its own directory but list nothing. Higher directories are the
    operator's; one the user cannot pass through is an error that says which."""
    cluster_dir = os.path.dirname(path)
    os.makedirs(cluster_dir, mode=0o711, exist_ok=True)
    for d in (cluster_dir, os.path.dirname(cluster_dir)):
        st = os.lstat(d)
        if st.st_uid == os.geteuid() and (st.st_mode & 0o7777) != 0o711:
            os.chmod(d, 0o711)
    d = cluster_dir
    while True:
        if not os.stat(d).st_mode & 0o001:
            raise SystemExit("%s is mode %o: the project users of this host cannot reach their instance "
                             "directories under it (let others traverse it: chmod o+x)"
                             % (d, os.stat(d).st_mode & 0o777))
        if d == os.path.dirname(d):
            return
        d = os.path.dirname(d)


def _own_dir(path, pw, mode=0o700):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    if os.path.islink(path) or not os.path.isdir(path):
        raise SystemExit("%s is not a directory" % path)
    os.lchown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


def cmd_prepare(d, name, key):
    print(json.dumps(_prepare(d, name, key)))
    return 0


def _prepare(d, name, key):
    """The instance's owner ({"name", "uid", "gid"}), or None on a host that cannot switch users."""
    _check_user(name)
    if not KEY.match(key):
        raise SystemExit("not an instance key: %r" % key)
    d = os.path.abspath(d)
    if os.geteuid() != 0:  # cannot switch users: the instance runs as this agent's user (a single-user host)
        os.makedirs(os.path.join(d, "proc"), exist_ok=True)
        os.chmod(d, 0o700)
        return None
    _traversable_parents(d)  # before anything is made: a directory the user could not reach is an error
    with _users_lock():
        # The reference first: a release of another instance at the same time cannot delete the user under us,
        # and a crash after it leaves a record that the instance's release removes.
        os.makedirs(os.path.join(USERS_DIR, name), mode=0o700, exist_ok=True)
        _write_atomic(os.path.join(USERS_DIR, name, key), d + "\n", 0o600)
        pw = _ensure_user(name)
    _own_dir(d, pw)
    _own_dir(os.path.join(d, "proc"), pw)
    return {"name": name, "uid": pw.pw_uid, "gid": pw.pw_gid}


def _remove_tree(d):
    if os.path.islink(d):
        os.unlink(d)
    elif os.path.isdir(d):
        shutil.rmtree(d)


def cmd_release(d, name, key):
    _check_user(name)
    if not KEY.match(key):
        raise SystemExit("not an instance key: %r" % key)
    d = os.path.abspath(d)
    if os.geteuid() != 0:
        _remove_tree(d)
        return 0
    with _users_lock():
        records = os.path.join(USERS_DIR, name)
        try:
            os.unlink(os.path.join(records, key))
        except FileNotFoundError:
            pass
        last = not (os.path.isdir(records) and os.listdir(records))
        pw = _user(name)
        if last and pw is not None:  # its processes go before its files: none can write there meanwhile
            _kill_user(pw.pw_uid, pw.pw_gid)
        _remove_tree(d)
        if last:
            if pw is not None:
                _delete_user(pw)
            try:
                os.rmdir(records)
            except FileNotFoundError:
                pass
    return 0


# --- volumes ------------------------------------------------------------------------------------------------


def _volume_name(key, n):
    return "oasis-%s-%d" % (key, n)


def _sh(argv):
    """Run a system tool; its error (stderr) is the agent's error."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(argv), p.returncode, p.stderr.strip()[:1500]))
    return p.stdout


class LoopVolumes:
    """Volumes as image files in a directory, each attached to a loop device: what a kernel without
    device-mapper can give. A backend answers four questions, whatever it is made of (an `lvm` one would use
    lvcreate/lvremove): which volumes of an instance exist, a volume's block device if it has one, make a
    volume (formatted ext4) and return its device, and remove an unmounted volume."""

    def __init__(self, where):
        if not where.startswith("/") or os.path.normpath(where) != where:
            raise SystemExit("not an absolute, normalized directory: %r" % where)
        self.dir = where

    def _file(self, name):
        return os.path.join(self.dir, name + ".img")

    def names(self, key):
        prefix = "oasis-%s-" % key
        try:
            files = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = [f[:-len(".img")] for f in files if f.startswith(prefix) and f.endswith(".img")
               and f[len(prefix):-len(".img")].isdigit()]
        return sorted(out, key=lambda n: int(n.rsplit("-", 1)[1]))

    def devices(self, name):
        """The loop devices the volume's file is attached to (one, unless someone attached it again)."""
        if not os.path.exists(self._file(name)):
            return []
        return _sh(["losetup", "--list", "--noheadings", "--output", "NAME", "--associated",
                    self._file(name)]).split()

    def free_gb(self):
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize / float(1 << 30)

    def create(self, name, size_gb):
        path = self._file(name)
        if not os.path.exists(path):
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            # The files are sparse: the filesystem under them must hold what the jobs write. Refusing here is
            # clearer than a job's "No space left on device" later.
            if self.free_gb() < size_gb:
                raise SystemExit("%s has %.1f GB free, less than a %d GB volume" % (self.dir, self.free_gb(),
                                                                                   size_gb))
            # Formatted under a temporary name and renamed: a file with the volume's name is always whole, and
            # a formatting that died is begun again from nothing.
            tmp = path + ".new"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, size_gb << 30)
            finally:
                os.close(fd)
            _sh(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", tmp])
            os.rename(tmp, path)
        return (self.devices(name) or [_sh(["losetup", "--find", "--show", path]).strip()])[0]

    def remove(self, name):
        for device in self.devices(name):
            _sh(["losetup", "--detach", device])
        for path in (self._file(name), self._file(name) + ".new"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


VOLUME_BACKENDS = {"loop": LoopVolumes}


def _backend(kind, where):
    if kind not in VOLUME_BACKENDS:
        raise SystemExit("unknown volume backend %r (known: %s)" % (kind, ", ".join(sorted(VOLUME_BACKENDS))))
    if os.geteuid() != 0:
        raise SystemExit("volumes need this agent to run as root (it makes block devices and mounts them)")
    return VOLUME_BACKENDS[kind](where)


def _unescape(field):
    """Octal escapes of /proc/self/mountinfo (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts():
    """(mount point, source) of every mount this machine's mount table has."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            rest = fields[fields.index("-") + 1:]
            out.append((_unescape(fields[4]), _unescape(rest[1]) if len(rest) > 1 else ""))
    return out


def _mount_point(d, relative, pw):
    """DIR/RELATIVE, made where missing with each new directory the user's, never through a link: a user who
    owns DIR cannot point the mount elsewhere."""
    if relative.startswith("/") or ".." in relative.split("/") or os.path.normpath(relative) != relative:
        raise SystemExit("not a path inside the instance's directory: %r" % relative)
    path = d
    for part in relative.split("/"):
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
            os.lchown(path, pw.pw_uid, pw.pw_gid)
        except FileExistsError:
            pass
        if os.path.islink(path) or not os.path.isdir(path):
            raise SystemExit("%s is not a directory" % path)
    if os.path.realpath(path) != path:
        raise SystemExit("%s resolves elsewhere" % path)
    return path


def cmd_volumes_up(kind, where, key, size_gb, d, name, *relative):
    print(json.dumps(_volumes_up(kind, where, key, size_gb, d, name, relative)))
    return 0


def _volumes_up(kind, where, key, size_gb, d, name, relative):
    _check_user(name)
    if not KEY.match(key):
        raise SystemExit("not an instance key: %r" % key)
    backend, d, size_gb = _backend(kind, where), os.path.abspath(d), int(size_gb)
    pw = _user(name)
    if pw is None:
        raise SystemExit("no such user: %s (the instance was not prepared on this host)" % name)
    if not os.path.isdir(d):
        raise SystemExit("%s: no such instance directory" % d)
    made = []
    # Two engines at once (one taking over) make each volume once. The lock lives with the image files (the
    # agent's), not in the instance's directory, where its user could put a link in its place.
    os.makedirs(where, mode=0o700, exist_ok=True)
    with _locked(os.path.join(where, "oasis-%s.lock" % key)):
        for n, rel in enumerate(relative, 1):
            vname = _volume_name(key, n)
            device = backend.create(vname, size_gb)
            point = _mount_point(d, rel, pw)
            mounted = dict(_mounts())
            if mounted.get(point) not in (None, device):
                raise SystemExit("%s has %s mounted, not the volume %s" % (point, mounted[point], vname))
            if point not in mounted:
                _sh(["mount", "-t", "ext4", "-o", "nosuid,nodev", device, point])
            os.chown(point, pw.pw_uid, pw.pw_gid)  # the volume's own root, now that it is mounted
            os.chmod(point, 0o700)
            made.append({"name": vname, "device": device, "mount": point})
    return made


def cmd_volumes_down(kind, where, key):
    if not KEY.match(key):
        raise SystemExit("not an instance key: %r" % key)
    backend = _backend(kind, where)
    lock = os.path.join(where, "oasis-%s.lock" % key)
    if not os.path.isdir(where):
        return 0
    with _locked(lock):
        for vname in backend.names(key):
            _volume_down(backend, vname)
        os.unlink(lock)
    return 0


def _volume_down(backend, vname):
    for device in backend.devices(vname):
        for point, source in _mounts():
            if source == device:
                # The instance's processes are stopped before its volumes go; should one still hold the
                # filesystem, it leaves the tree now and is freed when that process ends.
                if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
                    _sh(["umount", "--lazy", point])
    backend.remove(vname)


def _chown_tree(d, pw):
    """Give a job's directory (made by the engine) to the job's user; links are changed, never followed."""
    if os.path.islink(d) or not os.path.isdir(d):
        return
    os.lchown(d, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


def _become(pw, home):
    """Switch this process to a project user for good (supplementary groups, group, then user)."""
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ.update(HOME=home or "/nonexistent", USER=pw.pw_name, LOGNAME=pw.pw_name)


# What a command answers for a user that no longer exists: it has no process left to stop or wait for.
GONE = {"stop": "", "stop-all": "", "cancel": "", "signal": '{"running": false}',
        "wait": '{"done": true, "rc": null, "lost": true}'}


def _as_user(command, args):
    """Take `--user NAME [--home DIR]` off the front of a command's arguments and become that user; returns
    the remaining arguments, or None when the user is gone and `command` has nothing to do."""
    if not args or args[0] != "--user":
        return args
    name, rest = args[1], args[2:]
    home = None
    if rest[:1] == ["--home"]:
        home, rest = rest[1], rest[2:]
    _check_user(name)
    pw = _user(name)
    if pw is None:
        if command in GONE:
            return None
        raise SystemExit("no such user: %s (the instance was not prepared on this host)" % name)
    if os.geteuid() == pw.pw_uid:
        return rest
    if os.geteuid() != 0:
        raise SystemExit("cannot act as %s: this agent is not root" % name)
    if command == "run" and rest:
        os.makedirs(rest[0], exist_ok=True)
        _chown_tree(rest[0], pw)
    _become(pw, home)
    return rest


COMMANDS = {"start": cmd_start, "stop": cmd_stop, "stop-all": cmd_stop_all, "wait-log": cmd_wait_log,
            "run": cmd_run, "wait": cmd_wait, "cancel": cmd_cancel, "signal": cmd_signal,
            "busy-ports": cmd_busy_ports, "authorize": cmd_authorize, "unauthorize": cmd_unauthorize,
            "prepare": cmd_prepare, "release": cmd_release, "volumes-up": cmd_volumes_up,
            "volumes-down": cmd_volumes_down}
AS_USER = ("start", "stop", "stop-all", "wait", "wait-log", "run", "cancel", "signal")

def main(argv):
    """Run one command (`argv`: its name and arguments) in this process; its exit code."""
    if not argv or argv[0] not in COMMANDS or (len(argv) < 2 and argv[0] not in NO_ARGS):
        sys.stderr.write(__doc__)
        return 2
    command, args = argv[0], argv[1:]
    if command in AS_USER:
        args = _as_user(command, args)
        if args is None:
            if GONE[command]:
                print(GONE[command])
            return 0
    return COMMANDS[command](*args)


def cmd_provision():
    """One instance's provisioning in one call, its spec (JSON) on stdin: {"dir", "user", "key", "address",
    "ports": [...], "volumes": {"backend", "where", "size_gb", "mounts": [relative...]} or null}. In order: the
    directory and its user (`prepare`), the ports check (`busy-ports`: if any is held, it stops there and says
    which, for the caller to choose others and call again), the volumes (`volumes-up`). Each part is idempotent,
    so the whole is: a call cut short at any point is simply made again. Prints JSON {"owner", "busy",
    "volumes", "done": [the parts done]}."""
    spec = json.load(sys.stdin)
    out = {"owner": None, "busy": [], "volumes": [], "done": []}
    out["owner"] = _prepare(spec["dir"], spec["user"], spec["key"])
    out["done"].append("prepare")
    out["busy"] = _busy_ports(spec["address"], spec.get("ports") or [])
    if out["busy"]:
        print(json.dumps(out))
        return 0
    out["done"].append("ports")
    vol = spec.get("volumes")
    if vol and vol.get("mounts"):
        out["volumes"] = _volumes_up(vol["backend"], vol["where"], spec["key"], vol["size_gb"], spec["dir"],
                                     spec["user"], vol["mounts"])
        out["done"].append("volumes")
    print(json.dumps(out))
    return 0


def cmd_is_dir(d):
    """Whether an instance is reachable and made: its directory is there (the create's wait step)."""
    if not os.path.isdir(d):
        sys.stderr.write("%s: no such directory\n" % d)
        return 1
    return 0


# --- serve: one long-lived session carrying many calls ------------------------------------------------------


def _frame(obj):
    data = json.dumps(obj).encode()
    return b"%d\n" % len(data) + data


def _exit_code(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write("%s\n" % code)  # SystemExit("message"): the message on stderr, exit code 1, as Python does
    return 1


def _child(argv, data, out_w, err_w, inherited):
    """In the forked child of one call: its stdin, stdout and stderr are the call's own, then the command runs
    exactly as it would in a process of its own (a privilege switch, `--user`, is this child's alone)."""
    rc = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in inherited | {out_w, err_w}:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # the call's input was copied into this child with its memory: no pipe to fill, however large it is
        sys.stdin = io.TextIOWrapper(io.BytesIO(data))
        sys.stdout = os.fdopen(1, "w", closefd=False)
        sys.stderr = os.fdopen(2, "w", closefd=False)
        try:
            if argv[:1] == ["serve"]:
                raise SystemExit("serve is not a call of a session")
            rc = main(argv)
        except SystemExit as e:
            rc = _exit_code(e)
        except BaseException as e:  # noqa: BLE001 - a bug of a command is its call's error, not the session's
            sys.stderr.write("oasis-agent: %s: %s: %s\n" % (argv[0] if argv else "?", type(e).__name__, e))
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc if isinstance(rc, int) and 0 <= rc < 256 else 1)


class _Call:
    def __init__(self, cid, pid, out, err):
        self.id, self.pid, self.out, self.err = cid, pid, out, err
        self.data = {out: [], err: []}
        self.rc = None


def cmd_serve(*_):
    """Answer framed requests on stdin until it closes: each `{"id", "argv", "stdin"?}` runs that command in a
    forked child of this process (no interpreter start, no new SSH channel), many at once; each answer is
    `{"id", "rc", "stdout", "stderr"}`, in the order calls end. `{"id", "kill": true}` kills a call's child (its
    caller gave up on it). A frame is a decimal length, a newline, and that many bytes of JSON."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears of ended children
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    # From here on the protocol owns stdout; nothing else of this process may write there.
    sys.stdout = sys.stderr
    os.write(stdout, _frame({"serve": 1, "pid": os.getpid(), "uid": os.geteuid()}))
    calls, by_pid, by_fd = {}, {}, {}
    buf, open_input = b"", True

    def finish(call):
        for fd in (call.out, call.err):
            _drain(fd, call.data[fd])
            by_fd.pop(fd, None)
            os.close(fd)
        calls.pop(call.id, None)
        os.write(stdout, _frame({"id": call.id, "rc": call.rc,
                                 "stdout": b"".join(call.data[call.out]).decode(errors="replace"),
                                 "stderr": b"".join(call.data[call.err]).decode(errors="replace")}))

    while open_input or calls:
        readable, _, _ = _select([wake_r] + ([stdin] if open_input else []) + list(by_fd))
        for fd in readable:
            if fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            elif fd == stdin:
                chunk = os.read(stdin, 1 << 16)
                if not chunk:  # the channel closed: take no more; calls running finish on their own
                    open_input = False
                    break
                buf += chunk
                while True:
                    request, buf = _take_frame(buf)
                    if request is None:
                        break
                    _serve_one(request, calls, by_pid, by_fd, stdout, {wake_r, wake_w, stdin, stdout})
            else:
                call = by_fd.get(fd)
                if call is not None:
                    _drain(fd, call.data[fd])
        while True:  # reap every child that ended; its output is all in its pipes by now
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            call = by_pid.pop(pid, None)
            if call is not None:
                call.rc = os.waitstatus_to_exitcode(status)
                finish(call)
        if not open_input:
            break  # the caller is gone: nobody reads the answers of calls still running
    return 0


def _select(fds):
    while True:
        try:
            return select.select(fds, [], [])
        except InterruptedError:
            continue


def _drain(fd, into):
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def _take_frame(buf):
    head, sep, rest = buf.partition(b"\n")
    if not sep:
        return None, buf
    size = int(head)
    if len(rest) < size:
        return None, buf
    return json.loads(rest[:size].decode()), rest[size:]


def _serve_one(request, calls, by_pid, by_fd, stdout, own_fds):
    cid = request.get("id")
    if request.get("kill"):
        call = calls.get(cid)
        if call is not None and call.rc is None:
            try:
                os.kill(call.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    argv = [str(a) for a in request.get("argv") or []]
    data = (request.get("stdin") or "").encode()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _child(argv, data, out_w, err_w, own_fds | set(by_fd))
    os.close(out_w)
    os.close(err_w)
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
    call = _Call(cid, pid, out_r, err_r)
    calls[cid] = by_pid[pid] = call
    by_fd[out_r] = by_fd[err_r] = call


COMMANDS.update({"serve": cmd_serve, "provision": cmd_provision, "is-dir": cmd_is_dir})
NO_ARGS = ("serve", "provision")  # commands that take nothing on their command line

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
