"""Build the photo corpus: python scripts/build_corpus.py build-corpus data/corpus (see docs/data.md)."""

import sys

from turbosr.corpus import main

sys.exit(main())
