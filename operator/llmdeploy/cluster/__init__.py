"""The one place that talks to the API server (kube.py) and the plain data it yields (objects.py)."""
