"""Reading a Pod object from the API: its containers, their statuses and restart policies.

Native sidecars are init containers with their own `restartPolicy: Always`, and report
in `initContainerStatuses`; every reader here counts both lists.
"""


def container_names(pod):
    spec = pod.get("spec") or {}
    return [c.get("name") for c in (spec.get("initContainers") or [])
            + (spec.get("containers") or [])]


def container_statuses(pod):
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def restart_policies(pod):
    """Container name -> the restartPolicy the kubelet applies to it: a native sidecar's
    own (Always), else the pod's (Always by default); an init container that succeeded is
    never run again, so Always means OnFailure for it."""
    spec = pod.get("spec") or {}
    pod_policy = spec.get("restartPolicy") or "Always"
    policies = {c.get("name"): pod_policy for c in spec.get("containers") or []}
    for container in spec.get("initContainers") or []:
        policies[container.get("name")] = container.get("restartPolicy") or (
            "OnFailure" if pod_policy == "Always" else pod_policy)
    return policies


def terminated(container_status):
    """(exit code or None, finishedAt or None) when the container's state is terminated."""
    state = (container_status.get("state") or {}).get("terminated")
    if not state:
        return None
    code = state.get("exitCode")
    return (code if isinstance(code, int) else None), state.get("finishedAt")
