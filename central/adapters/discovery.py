"""NodeDiscoveryService on central: find nodes that fit (reputation, preferred region),
list them, and one node's info."""

from __future__ import annotations

from central.adapters.grpc_base import DEFAULT_PAGE, MAX_PAGE, Services, bounded_text, paging, unary
from central.adapters.specs import DEVICE_NAMES, ENUM_VALUES, check_finite, check_id
from central.lifecycle.errors import Refused
from central.lifecycle.policy import fits
from events import Requirements
from protos import node_pb2, node_pb2_grpc

__all__ = ["NodeDiscoveryService"]

# --------------------------------------------------------------------------- discovery


class NodeDiscoveryService(node_pb2_grpc.NodeDiscoveryServiceServicer):
    def __init__(self, services: Services) -> None:
        self.s = services

    @unary(node_pb2.FindNodesResponse)
    async def FindNodes(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        if request.required_device not in ENUM_VALUES["DeviceType"]:
            raise Refused(400, f"required_device {request.required_device} is unknown; use a DeviceType")
        if request.min_memory < 0:
            raise Refused(400, f"min_memory must be >= 0 bytes (got {request.min_memory})")
        min_reputation = check_finite("min_reputation", request.min_reputation)
        region = bounded_text("preferred_region", request.preferred_region, 256)
        if not 0 <= request.max_results <= MAX_PAGE:
            raise Refused(400, f"max_results must be 0..{MAX_PAGE} (got {request.max_results}); 0 means {DEFAULT_PAGE}")
        need = Requirements(device=DEVICE_NAMES.get(request.required_device), min_memory_bytes=request.min_memory)
        found = [n for n in self.s.state.online_nodes() if fits(need, n.devices, n.ram_bytes)
                 and self.s.state.reputation(n.node_id) >= min_reputation]
        found.sort(key=lambda n: (bool(region) and n.region != region,  # the preferred region first
                                  self.s.state.running_on(n.node_id) / n.slots, n.node_id))
        limit = request.max_results or DEFAULT_PAGE
        return node_pb2.FindNodesResponse(nodes=[self.s.node_info(n) for n in found[:limit]])

    @unary(node_pb2.ListNodesResponse)
    async def ListNodes(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        size, offset = paging(request.page_size, request.page_token)
        nodes = [n for n in self.s.state.nodes.values() if n.status == "online" or not request.online_only]
        page = nodes[offset:offset + size]
        more = offset + size < len(nodes)
        return node_pb2.ListNodesResponse(nodes=[self.s.node_info(n) for n in page], total_count=len(nodes),
                                          next_page_token=str(offset + size) if more else "")

    @unary(node_pb2.GetNodeInfoResponse)
    async def GetNodeInfo(self, request, context):
        self.s.auth.check_client(context.invocation_metadata())
        check_id("node_id", request.node_id)
        node = self.s.state.nodes.get(request.node_id)
        if node is None:
            raise Refused(404, f"unknown node {request.node_id!r}")
        return node_pb2.GetNodeInfoResponse(info=self.s.node_info(node))
