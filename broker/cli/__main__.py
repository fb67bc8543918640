"""``python -m broker.cli``: the same as the ``spiffe-broker`` command."""

from broker.cli.main import main

main()
