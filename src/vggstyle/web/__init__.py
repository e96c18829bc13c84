"""The web app: `vggstyle serve` and create_app (server.py), the routes (routes.py), reading an
upload (body.py), what a client may send (uploads.py), the OpenAPI details (openapi.py) and the
job queue (jobs.py).

FastAPI, uvicorn and python-multipart come with the [web] extra; nothing here imports
them until a server is created, and torch is imported with the first job.
"""
