"""Importers of released models: read a release's files safely, map its keys, write an ordinary model folder.

One module per released layout; each exposes ``import_<family>(...) -> Path`` (AddSR and SeeSR share one layout
and one module). An imported folder runs through the
same pipeline as a built-in: what differs (conditioning mode, sampler rule, CFW placement) is declared in its
config.json. Nothing here is needed at run time.
"""

from turbosr.importers.addsr import import_addsr, import_controlnet_release, import_seesr
from turbosr.importers.osediff import import_osediff
from turbosr.importers.stablesr import import_stablesr

__all__ = ["import_addsr", "import_controlnet_release", "import_osediff", "import_seesr", "import_stablesr"]
