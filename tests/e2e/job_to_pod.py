"""Turns an example's workload (a Job, a Deployment, ...) into the Pod `podman kube play` runs.

Kubernetes runs a Job's or a Deployment's pod from its `spec.template`; podman 4.3 plays
Pods. The conversion keeps the template as written and changes only what a machine with no
cluster and no registry needs:

- every image is mapped to a locally built one (an unmapped image is an error: nothing is
  ever pulled);
- every emptyDir becomes a claim on a podman volume that the caller creates first (tmpfs
  for `medium: Memory`), named after the run so that teardown removes exactly what it made
  (podman 4.3 would otherwise name an emptyDir's volume after the volume alone, shared by
  every pod on the machine);
- container ports are dropped: the pod gets no network but the loopback its containers
  share (podman refuses port mappings then), and nothing outside the pod talks to it;
- a reader container mounts every volume read-only, because a tmpfs volume vanishes with
  the last container using it and the tombstones must be read after the others exited;
- the caller may replace a container (a sidecar whose image is not available here) and
  override restartPolicy (a Deployment's `Always` would hide a crash by restarting).

Usage: python3 job_to_pod.py MANIFEST --name POD --image FROM=TO [--image ...]
"""

import argparse
import copy
import json
import sys

import yaml

TEMPLATE_PATHS = {
    "Pod": (),
    "Job": ("spec", "template"),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
READER_CONTAINER = "e2e-volume-reader"
READER_MOUNT_ROOT = "/volumes"
TEST_LABEL = "kubexit-e2e"


class ConversionError(Exception):
    pass


def load_documents(path):
    with open(path, encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def workload_of(documents):
    """The one document that carries a pod template (RBAC and the like are skipped)."""
    workloads = [doc for doc in documents if doc.get("kind") in TEMPLATE_PATHS]
    if len(workloads) != 1:
        raise ConversionError("expected one workload, found %d" % len(workloads))
    return workloads[0]


def pod_template(workload):
    template = workload
    for key in TEMPLATE_PATHS[workload["kind"]]:
        template = template[key]
    return copy.deepcopy(template)


class PodPlan:
    """A Pod manifest for podman plus the volumes to create before playing it.

    `volumes` maps each emptyDir's name in the manifest to (podman volume name, medium).
    """

    def __init__(self, name, manifest, volumes):
        self.name = name
        self.manifest = manifest
        self.volumes = volumes

    def container_names(self):
        return [c["name"] for c in self.manifest["spec"]["containers"]
                if c["name"] != READER_CONTAINER]

    def to_yaml(self):
        """JSON, which is YAML too: PyYAML's folding of long scripts trips podman's parser."""
        return json.dumps(self.manifest, indent=2) + "\n"


def plan_pod(workload, name, images, run_id, reader_image,
             restart_policy=None, replacements=None):
    """Build the PodPlan; `replacements` maps a container name to the fields to override."""
    template = pod_template(workload)
    spec = template["spec"]
    replacements = replacements or {}
    unknown = set(replacements) - {c["name"] for c in spec["containers"]}
    if unknown:
        raise ConversionError("no container named %s" % ", ".join(sorted(unknown)))
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    for container in spec.get("initContainers", []) + spec["containers"]:
        container.update(copy.deepcopy(replacements.get(container["name"], {})))
        container["image"] = mapped_image(container["image"], images)
        container["imagePullPolicy"] = "Never"
        container.pop("ports", None)
    volumes = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" not in volume:
            continue
        medium = (volume.pop("emptyDir") or {}).get("medium", "")
        claim = "%s-%s-%s" % (run_id, name, volume["name"])
        volume["persistentVolumeClaim"] = {"claimName": claim}
        volumes[volume["name"]] = (claim, medium)
    spec["containers"].append({
        "name": READER_CONTAINER,
        "image": reader_image,
        "imagePullPolicy": "Never",
        "command": ["sleep", "infinity"],
        "volumeMounts": [
            {"name": v, "mountPath": "%s/%s" % (READER_MOUNT_ROOT, v), "readOnly": True}
            for v in volumes
        ],
    })
    metadata = template.get("metadata") or {}
    labels = dict(metadata.get("labels") or {})
    labels[TEST_LABEL] = run_id
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }
    return PodPlan(name, manifest, volumes)


def mapped_image(image, images):
    if image in images:
        return images[image]
    if image in images.values():
        return image
    raise ConversionError("image %s has no local replacement (nothing is pulled)" % image)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--name", required=True)
    parser.add_argument("--image", action="append", default=[], metavar="FROM=TO")
    parser.add_argument("--run-id", default="kxe2e")
    parser.add_argument("--reader-image", default="localhost/kubexit-e2e-base:bookworm")
    args = parser.parse_args(argv)
    images = dict(item.split("=", 1) for item in args.image)
    try:
        plan = plan_pod(workload_of(load_documents(args.manifest)), args.name, images,
                        args.run_id, args.reader_image)
    except ConversionError as err:
        parser.error(str(err))
    for volume, (claim, medium) in plan.volumes.items():
        sys.stdout.write("# volume %s: podman volume %s, medium %r\n" % (volume, claim, medium))
    sys.stdout.write(plan.to_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
