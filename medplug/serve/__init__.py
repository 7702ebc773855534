"""``medplug serve``: a REST API and a small web page for viewers (OHIF, Slicer, browsers).

``create_app(settings)`` builds the FastAPI application; ``medplug serve`` runs it
under uvicorn. Security is on by default: a bearer token, upload limits, safe zip
extraction, request timeouts, a bounded worker pool and PHI-free access logs.
"""

from medplug.serve.app import create_app
from medplug.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
