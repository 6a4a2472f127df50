"""``python -m testbed``: the same as the ``testbed`` command."""

from testbed.cli import main

if __name__ == "__main__":
    main()
