import os
import sys

# `python -m luodi` puts the working directory first on sys.path; a bundle folder there (named like a runtime
# module luodi imports later) must never be imported. luodi itself is imported already.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.getcwd():
    del sys.path[0]

from .cli import main  # noqa: E402

raise SystemExit(main())
