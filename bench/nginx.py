"""nginx as a plain reverse proxy in front of the fake upstream: the reference for "what a fast
proxy costs". One process (`master_process off`, like bananagate's one worker), a generated
config in the run's temp dir with its own pid, log and temp paths, keep-alive to the upstream,
request and response bodies kept in memory, responses streamed (`proxy_buffering off`)."""

from __future__ import annotations

from pathlib import Path

from bench.procs import ProcessGroup, StartError, free_port, wait_http
from bench.targets import Skipped, Target
from bench.tools import command_version, ensure_debian_tool

MAX_BODY_MB = 64


def nginx_conf(workdir: Path, listen_port: int, upstream_port: int) -> str:
    temp = workdir / "nginx-temp"
    return f"""# Written by `python -m bench`.
daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    client_max_body_size {MAX_BODY_MB}m;
    client_body_buffer_size {MAX_BODY_MB}m;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}

    server {{
        listen 127.0.0.1:{listen_port} reuseport backlog=1024;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(
    group: ProcessGroup, workdir: Path, upstream: Target, *, allow_install: bool, log: list[str]
) -> Target:
    binary = ensure_debian_tool("nginx", "nginx-light", allow_install=allow_install, log=log)
    if binary is None:
        hint = "" if allow_install else " (installing was not allowed: run without --no-install, as root)"
        raise Skipped(f"nginx is not installed{hint}; `apt-get install -y nginx-light` adds it")
    (workdir / "nginx-temp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, port, upstream_port))
    log_path = workdir / "nginx.log"
    # -e: nginx opens its error log before reading the config; keep it out of /var/log.
    argv = [binary, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf)]
    process = group.spawn("nginx", argv, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", process, log_path, timeout=20)
    except StartError as exc:
        raise Skipped(f"nginx: {exc}") from None
    version = command_version([binary, "-v"])
    return Target(
        name="nginx",
        label="nginx reverse proxy",
        url=url,
        pid=process.pid,
        info={"version": version, "binary": binary, "config": str(conf)},
    )
