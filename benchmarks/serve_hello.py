"""Ray Serve's hello world, cold: the reference for the service's cold restart on this machine.

No StreamVision code runs beyond :func:`cluster.local.ensure_ray`, which starts the local Ray as
``streamvision serve`` starts it. Serve starts as its docs show (``serve.start``, then
``serve.run``): its controller, its proxy on PORT, one replica answering ``GET /hello``.
``benchmarks/live.py`` times it, as it times the service's cold restart, from the process's
start to the first answer (``serve_hello_cold_s``).

    python benchmarks/serve_hello.py PORT
"""

from __future__ import annotations

import signal
import sys
import threading

from fastapi import FastAPI
from ray import serve

from cluster.local import ensure_ray

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, bool]:
    """The one route."""
    return {"ok": True}


@serve.deployment
@serve.ingress(app)
class Hello:
    """One replica, no state."""


def main() -> None:
    port = int(sys.argv[1])
    ensure_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Hello.bind(), name="hello", route_prefix="/", blocking=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after ensure_ray: Ray installs its own
    stop.wait()
    serve.shutdown()


if __name__ == "__main__":
    main()
