"""`python -m keras_ssl.cli ...`: the `keras-ssl` command."""

import sys

from keras_ssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
