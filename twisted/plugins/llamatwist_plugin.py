"""twistd plugin: ``twistd -n llamatwist [llama-server options]``.

Twisted imports every plugin module to list them (``twistd --help``), so this
one only names llamatwist.tap; the heavy modules load when the plugin runs.
"""

from twisted.application.service import ServiceMaker

llamatwist = ServiceMaker(  # type: ignore[no-untyped-call]
    "llamatwist",
    "llamatwist.tap",
    "llama-server compatible LLM inference server",
    "llamatwist",
)
