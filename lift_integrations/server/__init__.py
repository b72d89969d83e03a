"""An OpenAI-compatible HTTP server in which every memory is a model (``lift serve``).

``GET /v1/models`` lists the base model and one model id per memory; ``POST /v1/chat/completions``
answers with the memory its ``model`` names (the base model's id: no memory), streamed as server-sent
events when asked. Any OpenAI client works unchanged: point its ``base_url`` at the server.

The modules split by what they need: :mod:`.protocol` (the OpenAI request and response formats) and
:mod:`.catalog` (which model id is which memory) are plain Python; :mod:`.engine` runs requests on a
:class:`~lift_integrations.model.LIFTModel` off the event loop; only :mod:`.app` imports FastAPI, which
the ``server`` extra installs (``pip install lift-integrations[server]``). Importing this package
imports none of them.
"""

from __future__ import annotations
