"""kubexit: coordinated start-up and termination of the containers in a pod."""

__version__ = "0.1.0"
