"""``python -m streamvision.cli``: the same as the ``streamvision`` command."""

from streamvision.cli.app import main

main()
