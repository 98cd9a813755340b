"""``python -m eps``: runs the installed ``eps`` command (the ``console_scripts`` entry point), so the library
itself never imports the stage layer (``pipeline/``)."""
import sys
from importlib.metadata import entry_points

commands = entry_points(group="console_scripts", name="eps")
if not commands:
    sys.exit("error: the eps command is not installed; run `pip install -e .` in the eps checkout")
next(iter(commands)).load()()
