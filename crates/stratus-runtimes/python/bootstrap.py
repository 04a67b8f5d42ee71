"""Stratus Python runtime bootstrap.

Speaks the AWS Lambda Runtime API (2018-06-01) over one persistent keep-alive
HTTP connection and runs the user's handler one invocation at a time, forever;
or, with AWS_LAMBDA_MAX_CONCURRENCY=N, up to N at once: `async def` handlers
on one event loop, plain ones on threads, each event with a connection of
its own, and each output line marked with the event it belongs to.
Started by the platform as `python3 -u -S bootstrap.py` with cwd = LAMBDA_TASK_ROOT.
Standard library only; works on CPython 3.8+.
"""

import importlib
import json
import os
import socket
import sys
import time

# Started with -S: the host interpreter's site-packages are not on sys.path.
# A function imports the standard library, its own code and the
# dependencies its deploy installed, so that one that forgot a requirement
# fails here as it would elsewhere.

# Standard-library modules that handlers commonly import, loaded by a runtime
# started ahead of demand while it waits, so that the handler's own import
# finds them ready.
PRELOAD = ("base64", "datetime", "decimal", "hashlib", "logging", "random", "re",
           "traceback", "typing", "urllib.parse", "uuid")


def preload():
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # The resolver's first call loads its configuration and modules.
    try:
        socket.getaddrinfo("127.0.0.1", 9001, 0, socket.SOCK_STREAM)
    except OSError:
        pass


def serve_as_template():
    """A template (the platform set STRATUS_TEMPLATE_FD) loads what every
    runtime loads once, then forks each new runtime into a sandbox the
    launcher made: it returns only in such a child, set up as a runtime
    started in that sandbox would be, which then waits for its activation.
    The steps and their order are the launcher's (template.rs); this only
    carries them out."""
    fd = os.environ.pop("STRATUS_TEMPLATE_FD", None)
    if fd is None:
        return
    import ctypes
    import resource
    import struct

    preload()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    sock = socket.socket(fileno=int(fd))
    try:
        # Each child shows its own command line and environment; a kernel
        # that cannot do that would show every instance as the template.
        # Tried here on the template itself, showing what it shows now.
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        with open("/proc/self/environ", "rb") as f:
            env = [var.partition(b"=")[::2] for var in f.read().split(b"\0")[:-1]]
        _show_as(argv, env, libc, ctypes, struct)
    except OSError as exc:
        sock.send(json.dumps({"error": "cannot set what a child shows in /proc: %s" % exc}).encode())
        os._exit(1)
    # What is loaded now stays out of the collector's way: a collection in
    # a child would otherwise write to every object's header and copy the
    # pages it shares with the template.
    import gc
    gc.collect()
    gc.freeze()
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            sock.close()
            _become_instance(json.loads(message), fds, libc, ctypes, resource, struct)
            return
        for f in fds:
            os.close(f)
        # The child ends as soon as it has forked the runtime.
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


# The blocks a process made from the template shows as its command line and
# environment; they live as long as the process.
_SHOWN = None


def _show_as(argv, env, libc, ctypes, struct):
    """Points the kernel's record of this process's command line and
    environment (its /proc/PID/cmdline and environ) at new blocks holding
    `argv` and `env`, as exec would have. PR_SET_MM_MAP leaves the other
    fields as they are and needs no capability."""
    global _SHOWN
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()

    def field(n):  # numbered as in proc(5)
        return int(fields[n - 3])

    args = b"".join(os.fsencode(a) + b"\0" for a in argv)
    envs = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env)
    blocks = ctypes.create_string_buffer(args + envs, len(args) + len(envs))
    base = ctypes.addressof(blocks)
    libc.sbrk.restype = ctypes.c_void_p
    brk = libc.sbrk(ctypes.c_long(0))
    mm_map = struct.pack(
        "=11QQII", field(26), field(27), field(45), field(46), field(47), brk, field(28),
        base, base + len(args), base + len(args), base + len(args) + len(envs),
        0, 0, 0xFFFFFFFF)  # no auxv, the same executable
    buf = ctypes.create_string_buffer(mm_map, len(mm_map))
    zero = ctypes.c_ulong(0)
    if libc.prctl(ctypes.c_int(35), ctypes.c_ulong(14), buf,  # PR_SET_MM, PR_SET_MM_MAP
                  ctypes.c_ulong(len(mm_map)), zero) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "PR_SET_MM_MAP: " + os.strerror(errno))
    _SHOWN = blocks


def _become_instance(req, fds, libc, ctypes, resource, struct):
    """In the template's child: joins the sandbox, forks the runtime into
    it and ends; returns in that runtime once it is set up."""
    control, out, err, reply_fd = fds[:4]
    reply = socket.socket(fileno=reply_fd)
    nr = req["syscalls"]

    def fail(exc):
        try:
            reply.send(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}).encode())
        finally:
            os._exit(1)

    def prctl(option, value):
        zero = ctypes.c_ulong(0)
        return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), zero, zero, zero)

    def check(rc, what):
        if rc != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))

    try:
        if req["setns"]:
            pidfd = fds[4]
            os.setgroups([])
            check(libc.syscall(ctypes.c_long(nr["setns"]), ctypes.c_long(pidfd),
                               ctypes.c_long(req["setns"])), "join the sandbox")
            os.close(pidfd)
        child = os.fork()
        if child:
            reply.send(json.dumps({"pid": child}).encode())
            os._exit(0)
    except BaseException as exc:
        fail(exc)
    try:
        # Go on once the launcher has moved this process into its cgroups.
        if not reply.recv(64):
            os._exit(1)
        if req["expect_pid"] is not None and os.getpid() != req["expect_pid"]:
            raise OSError("pid %d in the sandbox, not %d" % (os.getpid(), req["expect_pid"]))
        env = [tuple(pair) for pair in req["env"]]
        _show_as(req["argv"], env, libc, ctypes, struct)
        os.environ.clear()
        os.environ.update(env)
        parent = req["reparent_to"]
        if parent is not None:
            # Adopted by the launcher once the first child has ended; then
            # this process dies with it.
            for _ in range(20000):
                if os.getppid() == parent:
                    break
                time.sleep(0.0001)
            check(prctl(1, 9), "set the parent-death signal")  # PR_SET_PDEATHSIG, SIGKILL
            if os.getppid() != parent:
                raise OSError("the launcher did not adopt the process")
        os.setpgid(0, 0)
        uid = req["uid"]
        if uid is not None:
            # First the namespace's root, then the sandbox user: leaving
            # root for an unprivileged id clears every capability.
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
                        raise OSError("capabilities are left: " + line.strip())
        check(prctl(4, 1), "be dumpable as after exec")  # PR_SET_DUMPABLE
        check(prctl(38, 1), "set no_new_privs")  # PR_SET_NO_NEW_PRIVS
        plan = req["landlock"]
        if plan is not None:
            attr = struct.pack("QQQ", plan["handled_fs"], plan["handled_net"], plan["scoped"])
            attr_buf = ctypes.create_string_buffer(attr, len(attr))
            ruleset = libc.syscall(ctypes.c_long(nr["landlock_create_ruleset"]), attr_buf,
                                   ctypes.c_size_t(plan["size"]), ctypes.c_long(0))
            if ruleset < 0:
                check(-1, "create the Landlock ruleset")
            for path, rights in plan["rules"]:
                dirfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, dirfd), 12)
                check(libc.syscall(ctypes.c_long(nr["landlock_add_rule"]), ctypes.c_long(ruleset),
                                   ctypes.c_long(1), rule, ctypes.c_long(0)),
                      "allow " + path + " in Landlock")
                os.close(dirfd)
            check(libc.syscall(ctypes.c_long(nr["landlock_restrict_self"]), ctypes.c_long(ruleset),
                               ctypes.c_long(0)), "restrict with Landlock")
            os.close(ruleset)
        notify = None
        program = req["seccomp"]
        if program is not None:
            code = b"".join(struct.pack("=HBBI", *i) for i in program)
            filters = ctypes.create_string_buffer(code, len(code))
            fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(filters))
            fprog_buf = ctypes.create_string_buffer(fprog, len(fprog))
            flags = 8 if req["notify"] else 0  # SECCOMP_FILTER_FLAG_NEW_LISTENER
            rc = libc.syscall(ctypes.c_long(nr["seccomp"]), ctypes.c_long(1),  # SET_MODE_FILTER
                              ctypes.c_long(flags), fprog_buf)
            if rc < 0:
                check(-1, "install the seccomp filter")
            if req["notify"]:
                notify = rc
        files = req["max_files"]
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        # Standard input from /dev/null, output to the instance's pipes,
        # the activation at its descriptor; nothing else of the template's.
        null = os.open("/dev/null", os.O_RDONLY)
        keep = [os.dup(f) for f in (null, out, err, control)]
        for target, f in enumerate(keep):
            os.dup2(f, target)
        reply_fd = os.dup(reply.fileno())
        kept = [reply_fd] + ([notify] if notify is not None else [])
        for f in range(4, max(kept) + 1):
            if f not in kept:
                try:
                    os.close(f)
                except OSError:
                    pass
        os.closerange(max(kept) + 1, files)
        os.chdir(req["cwd"])
    except BaseException as exc:
        fail(exc)
    answer = socket.socket(fileno=reply_fd)
    try:
        socket.send_fds(answer, [json.dumps({"ready": True}).encode()],
                        [notify] if notify is not None else [])
    except OSError:
        os._exit(1)
    answer.close()
    if notify is not None:
        os.close(notify)
    reply.detach()


def await_activation():
    """A runtime started before its function was known (the platform set
    STRATUS_ACTIVATION_FD) waits here for it: one JSON line with the
    function's complete environment and working directory."""
    fd = os.environ.get("STRATUS_ACTIVATION_FD")
    if fd is None:
        return
    if os.environ.get("STRATUS_PRESTARTED"):
        preload()
    # One line, not to end of file: processes the platform forks meanwhile
    # may hold the writing end for a moment.
    fd = int(fd)
    chunks = []
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            log_err("stratus-runtime: the platform went away before activation")
            sys.exit(1)
        chunks.append(chunk)
    os.close(fd)
    message = json.loads(b"".join(chunks))
    os.environ.clear()
    os.environ.update(dict(message["env"]))
    os.chdir(message["cwd"])


API_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


def log_err(text):
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def flush_stdio():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


serve_as_template()
await_activation()

import contextvars

# Events one instance runs at once.
try:
    CONCURRENCY = max(1, int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY") or 1))
except ValueError:
    CONCURRENCY = 1

# The invocation in flight in this thread or task, for log records and the
# marks on output lines.
_request_id = contextvars.ContextVar("stratus_request_id", default=None)


class MarkedLines(object):
    """A text stream whose lines are written whole, each marked with the
    request of the thread or task that wrote it (0x1E, the id, 0x1F), so
    that the platform files it under that request though several run at
    once. A partial line waits, per request, for its end."""

    def __init__(self, stream):
        import threading

        self._stream = stream
        self._lock = threading.Lock()
        self._partial = {}

    def write(self, text):
        if not text:
            return 0
        owner = _request_id.get()
        with self._lock:
            pending = self._partial.pop(owner, "") + text
            end = pending.rfind("\n")
            if end < 0:
                self._partial[owner] = pending
                return len(text)
            whole, rest = pending[:end], pending[end + 1:]
            if rest:
                self._partial[owner] = rest
            if owner is not None:
                mark = "\x1e%s\x1f" % owner
                whole = mark + whole.replace("\n", "\n" + mark)
            self._stream.write(whole + "\n")
        return len(text)

    def end(self, owner):
        """Writes what `owner` left without a newline."""
        with self._lock:
            rest = self._partial.pop(owner, None)
        if rest:
            token = _request_id.set(owner)
            try:
                self.write(rest + "\n")
            finally:
                _request_id.reset(token)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


if CONCURRENCY > 1:
    sys.stdout = MarkedLines(sys.stdout)
    sys.stderr = MarkedLines(sys.stderr)

_LOG_LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30,
               "ERROR": 40, "FATAL": 50, "CRITICAL": 50}


def setup_logging():
    """As AWS's Python runtime does: a root handler that writes every record
    at or above the root logger's level to the function's log with the
    request id, as text (`[LEVEL]\tTIME\tREQUEST_ID\tmessage`) or, with
    AWS_LAMBDA_LOG_FORMAT=JSON, one JSON object per record.
    AWS_LAMBDA_LOG_LEVEL sets the root level."""
    import logging

    class RequestId(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id.get()
            return True

    class Json(logging.Formatter):
        def format(self, record):
            out = {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + ".%03dZ" % record.msecs,
                "level": record.levelname,
                "message": record.getMessage(),
                "logger": record.name,
                "requestId": _request_id.get(),
            }
            if record.exc_info and record.exc_info[0] is not None:
                import traceback

                out["errorType"] = record.exc_info[0].__name__
                out["errorMessage"] = str(record.exc_info[1])
                out["stackTrace"] = traceback.format_tb(record.exc_info[2])
            return json.dumps(out, default=str)

    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RequestId())
    if os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON":
        handler.setFormatter(Json())
    else:
        text = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S")
        text.converter = time.gmtime
        handler.setFormatter(text)
    root = logging.getLogger()
    level = _LOG_LEVELS.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper())
    if level is not None:
        root.setLevel(level)
    root.addHandler(handler)


setup_logging()


class _Response(object):
    """Status and headers of a Runtime API answer."""

    __slots__ = ("status", "headers")

    def __init__(self, status, headers):
        self.status = status
        self.headers = headers

    def getheader(self, name, default=None):
        return self.headers.get(name.lower(), default)


class RuntimeApiClient:
    """Minimal HTTP/1.1 client for the Runtime API over one keep-alive socket.

    Hand-written on `socket` rather than `http.client`, whose imports (the
    email package) cost more than the rest of the runtime's start."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = address
        self.host = host.strip("[]")
        self.port = int(port)
        self.sock = None
        self.buf = b""
        # A request for the next event went out with the last answer.
        self.next_sent = False

    def _connect(self):
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""

    def _read_until(self, marker):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(marker):]
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the Runtime API closed the connection")
            self.buf += chunk

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("the Runtime API closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _encode(self, method, path, body, headers):
        lines = ["%s %s%s HTTP/1.1" % (method, API_PREFIX, path), "Host: " + self.address]
        for name, value in (headers or {}).items():
            lines.append("%s: %s" % (name, value))
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append("Content-Length: %d" % len(body))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def _receive(self):
        status_line, _, rest = self._read_until(b"\r\n\r\n").decode("latin-1").partition("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer = {}
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                answer[name.strip().lower()] = value.strip()
        if answer.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                parts.append(self._read_exact(size))
                self._read_exact(2)
            data = b"".join(parts)
        else:
            data = self._read_exact(int(answer.get("content-length", "0")))
        if answer.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return _Response(status, answer), data

    def _roundtrip(self, method, path, body, headers, then_next=False):
        if self.sock is None:
            self._connect()
        message = self._encode(method, path, body, headers)
        if then_next:
            # The request for the next event goes out with the answer
            # (HTTP/1.1 pipelining): the platform may hand this runtime its
            # next event without waiting for another round trip.
            message += self._encode("GET", "/invocation/next", None, None)
        self.sock.sendall(message)
        answer = self._receive()
        self.next_sent = then_next and self.sock is not None
        return answer

    def _request(self, method, path, body=None, headers=None, then_next=False):
        for attempt in (1, 2):
            try:
                return self._roundtrip(method, path, body, headers, then_next and attempt == 1)
            except OSError as exc:
                self.next_sent = False
                # The server may have closed an idle keep-alive connection:
                # drop it and reconnect exactly once before giving up.
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                if attempt == 2:
                    log_err("stratus-runtime: Runtime API at %s is unreachable (%s %s): %s: %s"
                            % (self.address, method, path, type(exc).__name__, exc))
                    sys.exit(1)

    def _post(self, path, payload, headers=None, then_next=False):
        resp, data = self._request("POST", path, payload, headers, then_next)
        if not 200 <= resp.status < 300:
            log_err("stratus-runtime: POST %s rejected with HTTP %d: %s"
                    % (path, resp.status, data.decode("utf-8", "replace")))

    def next_invocation(self, headers=None):
        resp = None
        if self.next_sent:
            self.next_sent = False
            try:
                resp, data = self._receive()
            except OSError:
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
        if resp is None:
            resp, data = self._request("GET", "/invocation/next", headers=headers)
        if resp.status != 200:
            log_err("stratus-runtime: GET /invocation/next failed with HTTP %d: %s"
                    % (resp.status, data.decode("utf-8", "replace")))
            sys.exit(1)
        return resp, data

    def post_response(self, request_id, payload):
        self._post("/invocation/%s/response" % request_id, payload, then_next=True)

    def post_invocation_error(self, request_id, error):
        self._post("/invocation/%s/error" % request_id, _error_body(error),
                   {ERROR_TYPE_HEADER: "Unhandled"}, then_next=True)

    def post_init_error(self, error):
        self._post("/init/error", _error_body(error), {ERROR_TYPE_HEADER: error["errorType"]})


def _error_body(error):
    return json.dumps(error).encode("utf-8")


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _user_frames(tb):
    """Traceback entries with this bootstrap's and importlib's frames removed."""
    import traceback  # only errors need it; imported late to start faster

    own_file = _user_frames.__code__.co_filename
    return [f for f in traceback.extract_tb(tb)
            if f.filename != own_file and not f.filename.startswith(_IMPORTLIB_DIR)
            and not f.filename.startswith("<frozen importlib")]


def make_error(error_type, message, tb=None):
    import traceback

    stack = traceback.format_list(_user_frames(tb)) if tb is not None else []
    return {"errorMessage": message, "errorType": error_type, "stackTrace": stack}


def report_to_stderr(error):
    text = "[ERROR] %s: %s" % (error["errorType"], error["errorMessage"])
    if error["stackTrace"]:
        text += "\nTraceback (most recent call last):\n" + "".join(error["stackTrace"])
    log_err(text.rstrip("\n"))


def listen_for_debugger(port):
    """`stratus dev --debug`: debugpy listens on 127.0.0.1:PORT before the
    handler loads; None, or an error dict when it cannot."""
    if not port:
        return None
    try:
        import debugpy
    except ImportError:
        return make_error("Runtime.DebuggerMissing",
                          "stratus dev --debug needs debugpy in the function's code: "
                          "add debugpy to its requirements.txt")
    try:
        debugpy.listen(("127.0.0.1", int(port)))
    except Exception as exc:
        return make_error("Runtime.DebuggerFailed",
                          "debugpy cannot listen on 127.0.0.1:%s: %s" % (port, exc))
    log_err("stratus-runtime: debugpy listens on 127.0.0.1:%s" % port)
    return None


def load_handler(handler_spec):
    """Import the user's module and return (handler, None) or (None, error dict)."""
    module_path, _, func_name = handler_spec.rpartition(".")
    if not module_path or not func_name or module_path.startswith((".", "/")):
        return None, make_error(
            "Runtime.MalformedHandlerName",
            "Bad handler '%s': expected 'module.function'" % handler_spec)
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        error = make_error("Runtime.UserCodeSyntaxError",
                           "Syntax error in module '%s': %s" % (module_name, exc))
        # One entry: the "File ..., line N" location plus the offending source line.
        import traceback

        error["stackTrace"] = ["".join(traceback.format_exception_only(type(exc), exc)[:-1])]
        return None, error
    except ImportError as exc:
        return None, make_error("Runtime.ImportModuleError",
                                "Unable to import module '%s': %s" % (module_name, exc),
                                exc.__traceback__)
    except Exception as exc:
        # Any other exception raised by module-level user code.
        return None, make_error(type(exc).__name__, str(exc), exc.__traceback__)
    handler = getattr(module, func_name, None)
    if handler is None:
        return None, make_error("Runtime.HandlerNotFound",
                                "Handler '%s' missing on module '%s'" % (func_name, module_name))
    return handler, None


class CognitoIdentity(object):
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")


class Client(object):
    __slots__ = ("installation_id", "app_title", "app_version_name",
                 "app_version_code", "app_package_name")


class ClientContext(object):
    __slots__ = ("custom", "env", "client")


def _obj_from_dict(cls, data):
    if data is None:
        return None
    obj = cls()
    for key in cls.__slots__:
        setattr(obj, key, data.get(key))
    return obj


class LambdaContext(object):
    """The `context` argument passed to handlers, mirroring AWS Lambda's."""

    # Static per-process attributes, read once from the environment.
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
    # A string, as in AWS's own Python runtime (awslambdaric).
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")

    def __init__(self, request_id, deadline_ms, function_arn, client_context, cognito_identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self._deadline_ms = deadline_ms
        self.client_context = _obj_from_dict(ClientContext, client_context)
        # The verified end user of a client's call (`callable: true`).
        custom = (client_context or {}).get("custom")
        self.auth = custom.get("auth") if isinstance(custom, dict) else None
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        cognito_identity = cognito_identity or {}
        self.identity = CognitoIdentity()
        self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
        self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self):
        return "LambdaContext(aws_request_id=%r, function_name=%r, invoked_function_arn=%r)" % (
            self.aws_request_id, self.function_name, self.invoked_function_arn)


def _json_header(resp, name):
    raw = resp.getheader(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def is_coroutine_function(handler):
    """`async def`, without importing `inspect` or `asyncio` to ask."""
    code = getattr(handler, "__code__", None)
    return bool(getattr(code, "co_flags", 0) & 0x80)  # CO_COROUTINE


class EventLoop(object):
    """The one event loop that `async def` handlers run on: in the main
    thread with one event at a time, else in a thread of its own that every
    event's thread hands its coroutine to."""

    def __init__(self, threaded):
        import asyncio

        self._asyncio = asyncio
        self._loop = asyncio.new_event_loop()
        if threaded:
            import threading

            threading.Thread(target=self._loop.run_forever, daemon=True,
                             name="event-loop").start()
        self._threaded = threaded

    def run(self, handler, event, context):
        request_id = context.aws_request_id

        async def one():
            # Each task has its own context: the id is this event's.
            _request_id.set(request_id)
            return await handler(event, context)

        if self._threaded:
            return self._asyncio.run_coroutine_threadsafe(one(), self._loop).result()
        return self._loop.run_until_complete(one())


def run_invocation(client, handler, resp, body, loop=None):
    """Run one invocation and post either its result or its error."""
    request_id = resp.getheader("Lambda-Runtime-Aws-Request-Id")
    _request_id.set(request_id)
    trace_id = resp.getheader("Lambda-Runtime-Trace-Id")
    traceparent = resp.getheader("Lambda-Runtime-Traceparent")
    # The environment is the process's: it names the event only when one
    # runs at a time (OpenTelemetry SDKs read TRACEPARENT from it).
    if CONCURRENCY == 1:
        for name, value in (("_X_AMZN_TRACE_ID", trace_id), ("TRACEPARENT", traceparent)):
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)

    try:
        deadline_ms = int(resp.getheader("Lambda-Runtime-Deadline-Ms") or 0)
    except ValueError:
        deadline_ms = 0
    context = LambdaContext(request_id, deadline_ms,
                            resp.getheader("Lambda-Runtime-Invoked-Function-Arn"),
                            _json_header(resp, "Lambda-Runtime-Client-Context"),
                            _json_header(resp, "Lambda-Runtime-Cognito-Identity"))
    context.traceparent = traceparent

    error = payload = None
    try:
        event = json.loads(body) if body else None
    except (ValueError, RecursionError) as exc:
        # RecursionError: nested deeper than the interpreter's stack.
        error = make_error("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % exc)
    else:
        try:
            if loop is not None:
                result = loop.run(handler, event, context)
            else:
                result = handler(event, context)
        except Exception as exc:
            error = make_error(type(exc).__name__, str(exc), exc.__traceback__)
        else:
            try:
                payload = json.dumps(result).encode("utf-8")
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                error = make_error("Runtime.MarshalError", "Unable to marshal response: %s" % exc)

    if CONCURRENCY > 1:
        for stream in (sys.stdout, sys.stderr):
            stream.end(request_id)
    if error is not None:
        report_to_stderr(error)
        flush_stdio()
        client.post_invocation_error(request_id, error)
    else:
        flush_stdio()
        client.post_response(request_id, payload)


def main():
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        log_err("stratus-runtime: AWS_LAMBDA_RUNTIME_API is not set")
        sys.exit(1)
    client = RuntimeApiClient(address)

    # Init phase: make the code directory importable and load the handler.
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path.insert(0, task_root)
    # Dependencies the platform installed from requirements.txt or uv.lock.
    deps = os.path.join(task_root, ".stratus", "python")
    if os.path.isdir(deps):
        sys.path.insert(1, deps)
    # What the platform gives every function (boto3), last: a function's
    # own requirements win.
    runtime_dir = os.environ.get("LAMBDA_RUNTIME_DIR") or os.path.dirname(os.path.abspath(__file__))
    platform = os.path.join(runtime_dir, "platform")
    if os.path.isdir(platform):
        sys.path.append(platform)
    # The platform's SDK (`from stratus import db, files, auth`).
    sys.path.append(os.path.join(runtime_dir, "sdk"))
    started = time.perf_counter()
    error = listen_for_debugger(os.environ.get("STRATUS_DEBUG_PORT"))
    if error is None:
        handler, error = load_handler(os.environ.get("_HANDLER", ""))
    if error is not None:
        report_to_stderr(error)
        flush_stdio()
        client.post_init_error(error)
        sys.exit(1)
    # The platform reports the user's own init apart from the runtime's start.
    init_ms = "%.3f" % ((time.perf_counter() - started) * 1000)
    headers = {"Stratus-Handler-Init-Ms": init_ms}

    loop = EventLoop(CONCURRENCY > 1) if is_coroutine_function(handler) else None
    if CONCURRENCY == 1:
        while True:
            resp, body = client.next_invocation(headers)
            headers = None
            run_invocation(client, handler, resp, body, loop)

    # Several at once: each thread has a connection and an event of its
    # own; one that must stop ends the process.
    import threading

    def serve(client):
        try:
            while True:
                resp, body = client.next_invocation(headers)
                run_invocation(client, handler, resp, body, loop)
        except BaseException as exc:
            if not isinstance(exc, SystemExit):
                log_err("stratus-runtime: %s: %s" % (type(exc).__name__, exc))
            flush_stdio()
            os._exit(exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)

    threading.stack_size(1 << 20)
    for n in range(1, CONCURRENCY):
        try:
            threading.Thread(target=serve, args=(RuntimeApiClient(address),), daemon=True).start()
        except RuntimeError as exc:
            log_err("stratus-runtime: cannot start thread %d of AWS_LAMBDA_MAX_CONCURRENCY=%d: %s"
                    % (n + 1, CONCURRENCY, exc))
            flush_stdio()
            os._exit(1)
    serve(client)


if __name__ == "__main__":
    main()
