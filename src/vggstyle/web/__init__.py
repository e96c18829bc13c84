"""The web app: `vggstyle serve` (server.py), its job queue (jobs.py) and upload checks (uploads.py).

FastAPI, uvicorn and python-multipart come with the [web] extra; nothing here imports
them until a server is created.
"""
