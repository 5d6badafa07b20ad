"""forkd eval bridge: a warm Python that evaluates code sent over /run/forkd/eval.sock.

One request per connection: the client writes the code and shuts down its write side; the reply
is one JSON object. Names persist between calls, so each child keeps its own session.
"""

import ast
import contextlib
import io
import json
import os
import socket
import traceback

import numpy

SOCKET = "/run/forkd/eval.sock"
session = {"__name__": "__forkd__", "numpy": numpy, "np": numpy}


def to_json(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return None


def evaluate(code):
    """Like a REPL cell: the statements run, and the last one's value is returned if it is an expression."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            tree = ast.parse(code, "<eval>", "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<eval>", "exec"), session)
            if last is None:
                return {"ok": True, "value": None, "repr": None, "output": out.getvalue()}
            value = eval(compile(ast.Expression(last.value), "<eval>", "eval"), session)
        return {"ok": True, "value": to_json(value), "repr": repr(value), "output": out.getvalue()}
    except BaseException as err:  # noqa: BLE001 - the guest's error, whatever it is, goes back to the caller
        # skip this server's own frame: the traceback starts in the caller's code
        stack = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next))
        return {
            "ok": False,
            "error": {"type": type(err).__name__, "message": str(err), "stack": stack},
            "output": out.getvalue(),
        }


def serve():
    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET)
    os.chmod(SOCKET, 0o600)
    server.listen(16)
    while True:
        conn, _ = server.accept()
        with conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            reply = evaluate(b"".join(chunks).decode("utf-8", "replace"))
            conn.sendall(json.dumps(reply).encode())


serve()
