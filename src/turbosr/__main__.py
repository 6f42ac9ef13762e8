"""python -m turbosr"""

import sys

from turbosr.cli import main

sys.exit(main())
