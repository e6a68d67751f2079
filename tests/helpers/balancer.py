"""A real nginx in front of seqserve replicas on loopback, configured from deploy/nginx's template,
the same file docker-compose.yml gives the nginx image."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.server import RunningServer, free_port

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "seqserve.conf.template"
VARIABLES = ("SEQSERVE_HTTP_SERVERS", "SEQSERVE_GRPC_SERVERS", "LB_HTTP_PORT", "LB_GRPC_PORT")


@dataclass
class Balancer:
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    error_log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def render(values: dict[str, str]) -> str:
    """The template through envsubst, as the nginx image renders it (only these variables: nginx's
    own `$host` and the like stay)."""
    names = " ".join(f"${{{name}}}" for name in VARIABLES)
    done = subprocess.run(
        ["envsubst", names], input=TEMPLATE.read_text(), capture_output=True, text=True, check=True, env=values
    )
    return done.stdout


@contextmanager
def running_balancer(replicas: Sequence[RunningServer], directory: Path) -> Iterator[Balancer]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light; `make test` does it)")
    http_port, grpc_port = free_port(), free_port()
    snippet = render(
        {
            "SEQSERVE_HTTP_SERVERS": _servers([r.http_port for r in replicas]),
            "SEQSERVE_GRPC_SERVERS": _servers([r.grpc_port for r in replicas]),
            "LB_HTTP_PORT": f"127.0.0.1:{http_port}",
            "LB_GRPC_PORT": f"127.0.0.1:{grpc_port}",
        }
    )
    (directory / "seqserve.conf").write_text(snippet)
    error_log = directory / "error.log"
    # What the nginx image's own nginx.conf around conf.d/ amounts to, with every path in `directory`.
    (directory / "nginx.conf").write_text(
        f"""daemon off;
pid {directory}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/seqserve.conf;
}}
"""
    )
    command = [binary, "-p", str(directory), "-e", str(error_log), "-c", str(directory / "nginx.conf")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_listening([http_port, grpc_port], process, error_log)
        yield Balancer(http_port, grpc_port, process, error_log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _servers(ports: list[int]) -> str:
    # As docker-compose.yml writes them: a replica that failed once is left alone for 5 s.
    return " ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in ports)


def _wait_listening(ports: list[int], process: subprocess.Popen[bytes], error_log: Path) -> None:
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = error_log.read_text() if error_log.exists() else ""
                    raise RuntimeError(f"nginx did not start (exit {process.poll()}):\n{log}") from None
                time.sleep(0.05)
