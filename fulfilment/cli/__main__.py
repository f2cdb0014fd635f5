import sys

from fulfilment.cli import app

sys.exit(app())
