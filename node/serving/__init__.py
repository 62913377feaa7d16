"""Model serving on a node: deployments of trained models, the CyxWiz DeploymentService
and InferenceService, the Open Inference Protocol (gRPC and REST) and the original
HTTP API, with dynamic batching. See :mod:`node.serving.service` for the wiring."""

from node.serving.deployments import Deployment, Deployments, Status
from node.serving.service import Serving

__all__ = ["Deployment", "Deployments", "Serving", "Status"]
