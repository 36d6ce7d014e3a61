"""The API server: the one module that talks to it (kube.py) and the plain data it yields."""
