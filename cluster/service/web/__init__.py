"""The web page served by the query front end: static files in ``static/`` (plain HTML, CSS and
JS, no build step) and the few documents its pages need that the query API lacks
(:mod:`cluster.service.web.documents`)."""

from pathlib import Path

#: The folder of the page's files (shipped as package data).
STATIC = Path(__file__).resolve().parent / "static"
