"""``python -m hie`` is the ``hie`` command."""

from hie.cli import main

main()
